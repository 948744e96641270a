package obs

import (
	"embed"
	"net/http"
)

// The dashboard: a page at the admin address's root that draws the
// reporter's samples (GET StatsPath?history=N) as live charts. Everything it
// needs is embedded in the binary and its Content-Security-Policy allows
// this origin only, so it works on a host without internet and cannot be
// made to load anything from elsewhere.

//go:embed dashboard/index.html dashboard/dash.js dashboard/dash.css
var dashFS embed.FS

// dashCSP: scripts, styles and fetches from this origin only, no framing
// (clickjacking), no plugins.
const dashCSP = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// serveDash serves one embedded file with its content type.
func serveDash(name, ctype string) http.HandlerFunc {
	b, err := dashFS.ReadFile("dashboard/" + name)
	if err != nil {
		panic("obs: dashboard asset missing: " + name) // embedded at build time
	}
	return func(w http.ResponseWriter, _ *http.Request) {
		h := w.Header()
		h.Set("Content-Type", ctype)
		h.Set("Content-Security-Policy", dashCSP)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Cache-Control", "no-cache")
		w.Write(b)
	}
}
