import type { Metric, MetricValueWithName, Registry } from 'prom-client'

/** One series: observations per bucket (not yet cumulative), their sum and count. */
interface Series {
  labels: Record<string, string>
  perBucket: Float64Array
  sum: number
  count: number
}

/**
 * A Prometheus histogram for the request path. prom-client's own hashes an observation's labels into a
 * string on every call, even through a bound child; here a series is found by a plain string key and
 * an observation is a bucket search and three additions. The registry reads
 * it when scraped, exactly as it reads prom-client's histograms.
 */
export class LatencyHistogram {
  readonly type = 'histogram'
  readonly aggregator = 'sum'
  private readonly all: Series[] = []
  private readonly byLabels = new Map<string, { observe(value: number): void }>()

  constructor(
    readonly name: string,
    readonly help: string,
    readonly labelNames: readonly string[],
    private readonly buckets: readonly number[],
    registers: Registry[],
  ) {
    for (const registry of registers) registry.registerMetric(this as unknown as Metric)
  }

  /** The series with these label values (in `labelNames` order), made on first use. */
  series(...values: string[]): { observe(value: number): void } {
    const key = values.join('\u0000')
    const known = this.byLabels.get(key)
    if (known) return known
    const labels = Object.fromEntries(this.labelNames.map((name, i) => [name, values[i] ?? '']))
    const series: Series = { labels, perBucket: new Float64Array(this.buckets.length + 1), sum: 0, count: 0 }
    this.all.push(series)
    const { buckets } = this
    const observer = {
      observe(value: number) {
        let i = 0
        while (i < buckets.length && value > (buckets[i] as number)) i++
        series.perBucket[i] = (series.perBucket[i] as number) + 1
        series.sum += value
        series.count++
      },
    }
    this.byLabels.set(key, observer)
    return observer
  }

  /** What the registry renders (text or JSON), in the shape of prom-client's own histograms. */
  async get() {
    const values: MetricValueWithName<string>[] = []
    for (const series of this.all) {
      let cumulative = 0
      for (let i = 0; i <= this.buckets.length; i++) {
        cumulative += series.perBucket[i] as number
        const le = i < this.buckets.length ? (this.buckets[i] as number) : '+Inf'
        values.push({
          labels: { le, ...series.labels },
          value: cumulative,
          metricName: `${this.name}_bucket`,
        })
      }
      values.push({ labels: series.labels, value: series.sum, metricName: `${this.name}_sum` })
      values.push({ labels: series.labels, value: series.count, metricName: `${this.name}_count` })
    }
    return { name: this.name, help: this.help, type: this.type, aggregator: this.aggregator, values }
  }

  /** Every series back to zero (a registry's resetMetrics()); the callers' series stay valid. */
  reset(): void {
    for (const series of this.all) {
      series.perBucket.fill(0)
      series.sum = 0
      series.count = 0
    }
  }
}
