package edge

import (
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
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

// adminReq sends one request to the admin listener with optional header
// overrides ("Host" sets the Host header) and returns status and body.
func adminReq(t *testing.T, method, url string, hdr map[string]string) (int, http.Header, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		if k == "Host" {
			req.Host = v
			continue
		}
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, string(b)
}

func TestAdminToken(t *testing.T) {
	const token = "0123456789abcdef-admin"
	s := startServer(t, func(c *Config) { c.AdminToken = []byte(token) })
	base := "http://" + s.AdminAddr().String()
	t.Cleanup(http.DefaultClient.CloseIdleConnections)
	good := map[string]string{"Authorization": "Bearer " + token}
	for _, tc := range []struct {
		name, method, path string
		hdr                map[string]string
		code               int
	}{
		{"healthz open", "GET", "/healthz", nil, 200},
		{"read without token", "GET", "/groups", nil, 401},
		{"stats without token", "GET", "/stats", nil, 401},
		{"change without token", "PUT", "/groups/team/members/alice", nil, 401},
		{"wrong token", "GET", "/groups", map[string]string{"Authorization": "Bearer " + token + "x"}, 401},
		{"token prefix", "GET", "/groups", map[string]string{"Authorization": "Bearer " + token[:16]}, 401},
		{"basic scheme", "GET", "/groups", map[string]string{"Authorization": "Basic " + token}, 401},
		{"read with token", "GET", "/groups", good, 200},
		{"change with token", "PUT", "/groups/team/members/alice", good, 201},
		{"rebound host", "GET", "/groups", map[string]string{"Authorization": "Bearer " + token, "Host": "evil.example:9090"}, 421},
		{"rebound host healthz", "GET", "/healthz", map[string]string{"Host": "evil.example"}, 421},
		{"localhost host", "GET", "/groups", map[string]string{"Authorization": "Bearer " + token, "Host": "LocalHost:9090"}, 200},
		{"ipv6 literal host", "GET", "/groups", map[string]string{"Authorization": "Bearer " + token, "Host": "[::1]:9090"}, 200},
		{"cross-site change", "PUT", "/groups/team/members/bob", map[string]string{"Authorization": "Bearer " + token, "Origin": "http://evil.example"}, 403},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, h, body := adminReq(t, tc.method, base+tc.path, tc.hdr)
			if code != tc.code {
				t.Fatalf("%s %s: %d %s; want %d", tc.method, tc.path, code, body, tc.code)
			}
			if code == 401 && !strings.HasPrefix(h.Get("WWW-Authenticate"), "Bearer ") {
				t.Fatalf("401 without a Bearer challenge: %q", h.Get("WWW-Authenticate"))
			}
		})
	}
	if m := s.Groups().Members("team"); len(m) != 1 || m[0] != "alice" {
		t.Fatalf("members %v: only the authorized PUT may have changed the group", m)
	}
}

func TestAdminNoToken(t *testing.T) {
	s := startServer(t, nil)
	base := "http://" + s.AdminAddr().String()
	t.Cleanup(http.DefaultClient.CloseIdleConnections)
	for _, tc := range []struct {
		name, method, path string
		hdr                map[string]string
		code               int
	}{
		{"read", "GET", "/groups", nil, 200},
		{"change from loopback", "PUT", "/groups/team/members/alice", nil, 201},
		{"cross-site origin", "DELETE", "/groups/team/members/alice", map[string]string{"Origin": "http://evil.example"}, 403},
		{"cross-site fetch metadata", "DELETE", "/groups/team/members/alice", map[string]string{"Sec-Fetch-Site": "cross-site"}, 403},
		{"same-origin", "DELETE", "/groups/team/members/alice", map[string]string{"Origin": "http://127.0.0.1:9090", "Sec-Fetch-Site": "same-origin"}, 200},
		{"rebound host", "GET", "/groups", map[string]string{"Host": "attacker.example"}, 421},
		{"admin host name", "GET", "/groups", map[string]string{"Host": "127.0.0.1"}, 200},
		{"machine host name", "GET", "/groups", map[string]string{"Host": hostname(t) + ":9090"}, 200},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if code, _, body := adminReq(t, tc.method, base+tc.path, tc.hdr); code != tc.code {
				t.Fatalf("%s %s: %d %s; want %d", tc.method, tc.path, code, body, tc.code)
			}
		})
	}
	// A peer off loopback (only possible through a handler mounted
	// elsewhere, as the listener is loopback) reads but does not change.
	h := s.AdminHandler()
	for _, tc := range []struct {
		method, path string
		code         int
	}{
		{"GET", "/groups", 200},
		{"PUT", "/groups/team/members/carol", 403},
		{"GET", "/debug/pprof/", 403},
	} {
		req := httptest.NewRequest(tc.method, tc.path, nil)
		req.RemoteAddr, req.Host = "192.0.2.7:4000", "127.0.0.1:9090"
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != tc.code {
			t.Errorf("%s %s from 192.0.2.7: %d %s; want %d", tc.method, tc.path, rec.Code, rec.Body, tc.code)
		}
	}
}

func TestAdminConfig(t *testing.T) {
	for _, tc := range []struct {
		admin, token string
		ok           bool
	}{
		{"127.0.0.1:0", "", true},
		{"localhost:0", "", true},
		{"[::1]:0", "", true},
		{"0.0.0.0:0", "", false},
		{":0", "", false},
		{"admin.internal:9090", "", false},
		{"0.0.0.0:0", "short", false},
		{"0.0.0.0:0", "0123456789abcdef", true},
	} {
		t.Run(tc.admin+"/"+tc.token, func(t *testing.T) {
			cfg := Config{Addr: "127.0.0.1:0", Loops: 1, Auth: AuthLoopbackAnonymous, AdminAddr: tc.admin, AdminToken: []byte(tc.token)}
			if tc.token == "" {
				cfg.AdminToken = nil
			}
			s, err := New(cfg)
			if s != nil {
				s.Close()
			}
			if tc.ok != (err == nil) || (err != nil && !errors.Is(err, ErrBadConfig)) {
				t.Fatalf("New: %v; want ok=%v or ErrBadConfig", err, tc.ok)
			}
		})
	}
}

func hostname(t *testing.T) string {
	h, err := os.Hostname()
	if err != nil || h == "" {
		t.Skipf("no host name: %v", err)
	}
	return h
}
