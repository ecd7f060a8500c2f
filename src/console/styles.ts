/** The console's one stylesheet, served from /admin/console.css (the CSP allows styles from the service only). */
export const CONSOLE_CSS = `
:root { --ink: #1b1f24; --muted: #57606a; --line: #d0d7de; --bg: #ffffff; --panel: #f6f8fa;
  --accent: #0b57d0; --danger: #b3261e; --good: #1a7f37; --bad: #b3261e; color-scheme: light; }
* { box-sizing: border-box; }
body { margin: 0; font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--ink); background: var(--bg); }
a { color: var(--accent); }
a:focus-visible, button:focus-visible, input:focus-visible, select:focus-visible, textarea:focus-visible, main:focus-visible {
  outline: 3px solid #1f6feb; outline-offset: 2px; }
.skip { position: absolute; left: -999px; top: 0; background: var(--bg); padding: .5rem 1rem; }
.skip:focus { left: .5rem; z-index: 1; }
header { display: flex; flex-wrap: wrap; align-items: center; gap: .5rem 1.5rem; padding: .6rem 1.5rem;
  background: #0d1117; color: #f0f6fc; }
header a { color: #c9d1d9; text-decoration: none; }
header a[aria-current="page"] { color: #ffffff; font-weight: 600; border-bottom: 2px solid #58a6ff; }
header a:hover { color: #ffffff; }
.brand { font-weight: 700; letter-spacing: .02em; }
nav ul { display: flex; flex-wrap: wrap; gap: .25rem 1rem; margin: 0; padding: 0; list-style: none; }
.who { margin-left: auto; display: flex; align-items: center; gap: .75rem; font-size: .9rem; color: #c9d1d9; }
.who strong { color: #ffffff; }
main { max-width: 72rem; margin: 0 auto; padding: 1rem 1.5rem 3rem; }
h1 { font-size: 1.5rem; margin: .5rem 0 1rem; overflow-wrap: anywhere; }
h2 { font-size: 1.15rem; margin: 1.75rem 0 .5rem; }
table { width: 100%; border-collapse: collapse; margin: .5rem 0; font-size: .92rem; }
caption { text-align: left; color: var(--muted); padding: .25rem 0; }
th, td { text-align: left; vertical-align: top; padding: .45rem .5rem; border-bottom: 1px solid var(--line); }
th { background: var(--panel); }
/* Long tokens (a User-Agent, an id) break only where they must, not mid-word everywhere. */
td small { color: var(--muted); overflow-wrap: anywhere; }
td time { white-space: nowrap; }
.actions { white-space: nowrap; }
form.inline { display: inline-flex; gap: .4rem; align-items: center; margin: 0 .25rem .25rem 0; }
form.stack { display: flex; flex-direction: column; gap: .4rem; max-width: 36rem; }
form.stack > button { align-self: flex-start; }
form.search, form.filters { display: flex; flex-wrap: wrap; gap: .5rem; align-items: center; margin: .5rem 0 1rem; }
/* A label and its field wrap to the next line together. */
.field { display: inline-flex; gap: .5rem; align-items: center; }
fieldset { border: 1px solid var(--line); border-radius: 6px; padding: .5rem .75rem; display: flex; flex-direction: column; gap: .25rem; }
input, select, textarea { font: inherit; padding: .35rem .5rem; border: 1px solid #8c959f; border-radius: 6px; color: var(--ink); background: #fff; }
button, .button { font: inherit; padding: .35rem .8rem; border-radius: 6px; border: 1px solid #1f2328; background: #f6f8fa;
  color: var(--ink); cursor: pointer; text-decoration: none; display: inline-block; }
button:hover, .button:hover { background: #eaeef2; }
button.danger { border-color: var(--danger); color: var(--danger); }
button.danger:hover { background: #ffebe9; }
.row { display: flex; flex-wrap: wrap; gap: .5rem 1.5rem; align-items: center; }
.notice { padding: .6rem .9rem; border-radius: 6px; border: 1px solid; }
.notice.status { background: #dafbe1; border-color: #4ac26b; }
.notice.alert { background: #ffebe9; border-color: #ff8182; }
.secret { background: #fff8c5; border: 1px solid #d4a72c; border-radius: 6px; padding: .6rem .9rem; margin: .5rem 0 1rem; }
.secret input { width: 100%; font-family: ui-monospace, monospace; }
.hint, .empty { color: var(--muted); }
.hint { max-width: 46rem; }
.tiles { display: grid; grid-template-columns: repeat(auto-fill, minmax(14rem, 1fr)); gap: .75rem; margin: 1rem 0; }
.tile { margin: 0; padding: .75rem 1rem; border: 1px solid var(--line); border-radius: 8px; background: var(--panel); }
.tile dt { color: var(--muted); font-size: .85rem; }
.tile dd { margin: .2rem 0 0; font-size: 1.35rem; font-weight: 600; }
.tile.good dd { color: var(--good); }
.tile.bad dd { color: var(--bad); }
.facts { display: grid; grid-template-columns: max-content 1fr; gap: .25rem 1rem; }
.facts dt { color: var(--muted); }
.facts dd { margin: 0; overflow-wrap: anywhere; }
form.sign-in { max-width: 26rem; }
code { font-family: ui-monospace, monospace; font-size: .9em; }
`
