package bench

import (
	"net/http"
	"net/http/httptest"
	"testing"
)

// TestAdminStatsSendsToken: --admin against a token-protected edged works
// with EDGED_ADMIN_TOKEN set, as edgectl's does.
func TestAdminStatsSendsToken(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer s3cret-token-0123456789" {
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		w.Write([]byte(`{"connections": 7, "name": "x"}`))
	}))
	defer srv.Close()
	t.Setenv("EDGED_ADMIN_TOKEN", "")
	if _, err := adminStats(srv.Client(), srv.URL); err == nil {
		t.Fatal("no token: the protected endpoint answered")
	}
	t.Setenv("EDGED_ADMIN_TOKEN", "s3cret-token-0123456789\n")
	m, err := adminStats(srv.Client(), srv.URL)
	if err != nil || m["connections"] != 7 || len(m) != 1 {
		t.Fatalf("with the token: %v, %v", m, err)
	}
}
