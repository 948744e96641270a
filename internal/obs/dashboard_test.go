package obs

import (
	"io/fs"
	"net/http"
	"regexp"
	"strings"
	"testing"
)

// TestDashboardServed: the page and its assets come from the binary with a
// same-origin-only Content-Security-Policy, and nothing in them names
// another origin (the SVG namespace URI is an identifier, never fetched).
func TestDashboardServed(t *testing.T) {
	r, err := New(Options{})
	if err != nil {
		t.Fatal(err)
	}
	base := startAdmin(t, r)
	for path, ctype := range map[string]string{
		"/": "text/html", "/dashboard/dash.js": "text/javascript", "/dashboard/dash.css": "text/css",
	} {
		resp, err := http.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), ctype) ||
			!strings.Contains(resp.Header.Get("Content-Security-Policy"), "default-src 'none'") {
			t.Errorf("GET %s: %d %q CSP %q", path, resp.StatusCode, resp.Header.Get("Content-Type"), resp.Header.Get("Content-Security-Policy"))
		}
	}
	if code, _ := httpDo(t, "GET", base+"/nothing-here", ""); code != http.StatusNotFound {
		t.Errorf("GET /nothing-here: %d, want 404 (the page is at / only)", code)
	}
	url := regexp.MustCompile(`(?i)(https?:)?//[a-z0-9.-]+\.[a-z]{2,}`)
	fs.WalkDir(dashFS, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, _ := dashFS.ReadFile(p)
		for _, m := range url.FindAllString(string(b), -1) {
			if m != "http://www.w3.org" {
				t.Errorf("%s names another origin: %s", p, m)
			}
		}
		return nil
	})
}
