package main

import (
	"strings"
	"testing"

	"github.com/edgedhq/edged/edge"
)

func TestGroupAgainstServer(t *testing.T) {
	s, admin := startAdminServer(t)
	steps := []struct {
		args []string
		code int
		out  string
	}{
		{[]string{"group", "add", "team", "alice"}, exitOK, "added alice to team\n"},
		{[]string{"group", "add", "team", "bob"}, exitOK, "added bob to team\n"},
		{[]string{"group", "add", "team", "bob"}, exitOK, "bob already in team\n"},
		{[]string{"group", "add", "ops", "carol"}, exitOK, "added carol to ops\n"},
		{[]string{"group", "add", "crew", "dave", "erin", "dave"}, exitOK, "added dave to crew\nadded erin to crew\ndave already in crew\n"},
		{[]string{"group", "list", "crew"}, exitOK, "dave\nerin\n"},
		{[]string{"group", "remove", "crew", "dave", "erin"}, exitOK, "removed dave from crew\nremoved erin from crew\n"},
		{[]string{"group", "add", "crew", "frank", "bad user", "gina"}, exitFailed, "added frank to crew\n"},
		{[]string{"group", "list", "crew"}, exitOK, "frank\n"},
		{[]string{"group", "list"}, exitOK, "crew\nops\nteam\n"},
		{[]string{"group", "list", "team"}, exitOK, "alice\nbob\n"},
		{[]string{"group", "remove", "team", "alice"}, exitOK, "removed alice from team\n"},
		{[]string{"group", "list", "team"}, exitOK, "bob\n"},
		{[]string{"group", "remove", "team", "alice"}, exitFailed, ""},
		{[]string{"group", "add", "bad name", "alice"}, exitFailed, ""},
		{[]string{"group", "add", "team"}, exitUsage, ""},
		{[]string{"group", "rename", "team"}, exitUsage, ""},
	}
	for _, st := range steps {
		out, errOut, code := edgectl(append(st.args, "--admin", admin)...)
		if code != st.code || (st.out != "" && out != st.out) {
			t.Fatalf("edgectl %s: exit %d, out %q, err %q; want exit %d, out %q", strings.Join(st.args, " "), code, out, errOut, st.code, st.out)
		}
	}
	if got := s.Groups().Members("team"); len(got) != 1 || got[0] != "bob" {
		t.Fatalf("server members of team: %v", got)
	}
	if _, errOut, code := edgectl("group", "list", "--admin", "127.0.0.1:1"); code != exitFailed || !strings.Contains(errOut, "reach edged admin") {
		t.Fatalf("unreachable admin: exit %d, %q", code, errOut)
	}
}

// startAdminServer starts an edge server with anonymous loopback clients
// and an admin listener, stopped when t ends; it returns the admin URL too.
func startAdminServer(t *testing.T) (*edge.Server, string) {
	t.Helper()
	s, err := edge.New(edge.Config{Addr: "127.0.0.1:0", Loops: 1, Auth: edge.AuthLoopbackAnonymous, AdminAddr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, "http://" + s.AdminAddr().String()
}
