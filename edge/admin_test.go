package edge

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestAdminAPI(t *testing.T) {
	s := startServer(t, nil)
	base := "http://" + s.AdminAddr().String()
	t.Cleanup(http.DefaultClient.CloseIdleConnections)
	for _, tc := range []struct {
		method, path string
		code         int
		body         string // substring
	}{
		{"GET", "/healthz", 200, "ok"},
		{"GET", "/groups", 200, `"groups":[]`},
		{"PUT", "/groups/team/members/alice", 201, `"added":true`},
		{"PUT", "/groups/team/members/alice", 200, `"added":false`},
		{"PUT", "/groups/team/members/bob", 201, ""},
		{"GET", "/groups/team", 200, `"members":["alice","bob"]`},
		{"GET", "/groups/none", 200, `"members":[]`},
		{"PUT", "/groups/bad%20name/members/alice", 400, "invalid group name"},
		{"PUT", "/groups/team/members/a%2Fb", 400, "invalid user id"},
		{"DELETE", "/groups/team/members/alice", 200, `"removed":true`},
		{"DELETE", "/groups/team/members/alice", 404, "not a member"},
		{"POST", "/groups/team", 405, ""},
		{"GET", "/stats", 200, `"closes":{`},
	} {
		t.Run(tc.method+" "+tc.path, func(t *testing.T) {
			req, _ := http.NewRequest(tc.method, base+tc.path, nil)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tc.code || !strings.Contains(string(b), tc.body) {
				t.Fatalf("%d %s; want %d and %q", resp.StatusCode, b, tc.code, tc.body)
			}
		})
	}
	// The mux is reusable beside other routes (observability mounts there).
	mux := s.Mux()
	mux.HandleFunc("GET /extra", func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("x")) })
	rec := httptest.NewRecorder()
	mux.ServeHTTP(rec, httptest.NewRequest("GET", "/extra", nil))
	if rec.Body.String() != "x" {
		t.Fatal("extra route not served")
	}
}
