// The example's pages, styles and script: fixed text (nothing from a request goes into them), served
// from this origin, so the Content-Security-Policy allows them without 'unsafe-inline'.

const head = (title: string) => `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>${title}</title>
<link rel="stylesheet" href="/page.css">`

/** GET /: a user name and a button (a demo: no password). */
export const LOGIN_PAGE = `${head('Sign in')}
</head>
<body>
<main>
<h1>Sign in</h1>
<p>This is a demo: there is no password. Any user name signs you in as that user.</p>
<form method="post" action="/login">
<label>User name <input name="user_id" required maxlength="256" autocomplete="username"></label>
<button>Sign in</button>
</form>
</main>
</body>
</html>
`

/**
 * GET /devices: the element, its file from this origin, and its API through this origin's /auth/v1/me.
 * The JSON child renames the title without any script of the page's own.
 */
export const DEVICES_PAGE = `${head('Your account')}
<script type="module" src="/widget/session-devices.js"></script>
<script type="module" src="/page.js"></script>
</head>
<body>
<main>
<h1>Your account</h1>
<session-devices api="/auth/v1/me">
<script type="application/json" data-strings>{ "title": "Where you are signed in" }</script>
</session-devices>
<p id="signed-out" hidden><a href="/">Sign in again</a></p>
</main>
</body>
</html>
`

/** The host's theme: custom properties and ::part() rules reach into the element's shadow DOM. */
export const PAGE_CSS = `body { font: 16px/1.5 system-ui, sans-serif; margin: 0; background: #f6f7f9; color: #1f2328; }
main { max-width: 48rem; margin: 2rem auto; padding: 0 1rem; }
form { display: flex; gap: .5rem; align-items: end; flex-wrap: wrap; }
input, button { font: inherit; padding: .35rem .6rem; }
session-devices {
  --sd-accent: #5b3cc4;
  --sd-radius: 12px;
  --sd-padding: 1.25rem 1.5rem;
}
session-devices::part(title) { font-size: 1.35rem; }
`

/**
 * The host listens to the element's events: when the session is over (signed out here, or refused by
 * the service), it offers to sign in again.
 */
export const PAGE_JS = `const devices = document.querySelector('session-devices')
const signIn = document.getElementById('signed-out')
devices.addEventListener('session-devices:inactive', () => { signIn.hidden = false })
devices.addEventListener('session-devices:signed-out', (event) => {
  if (event.detail.current) signIn.hidden = false
})
`
