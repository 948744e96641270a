package main

import (
	"bytes"
	"flag"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/edgedhq/edged/bench"
	"github.com/edgedhq/edged/internal/testenv"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/")

func TestMain(m *testing.M) {
	bench.MaybeWorker() // run re-executes this test binary as its workers
	os.Exit(m.Run())
}

func TestHelpGolden(t *testing.T) {
	cases := [][]string{{"--help"}}
	for _, c := range commands {
		cases = append(cases, []string{c.name, "--help"})
	}
	for _, args := range cases {
		name := "edgebench.help.golden"
		if len(args) == 2 {
			name = args[0] + ".help.golden"
		}
		t.Run(name, func(t *testing.T) {
			var out, errb bytes.Buffer
			if rc := run(args, &out, &errb); rc != exitOK {
				t.Fatalf("exit %d, stderr %s", rc, errb.String())
			}
			testenv.Golden(t, filepath.Join("testdata", name), out.Bytes(), *update)
		})
	}
}

func TestBadCommandLine(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"no args", nil, "Workloads:"},
		{"unknown workload", []string{"frobnicate"}, `unknown workload "frobnicate"`},
		{"unknown flag", []string{"pairs", "--bogus"}, "flag provided but not defined: -bogus"},
		{"bad int", []string{"connect", "--conns", "many"}, `invalid value "many" for flag -conns`},
		{"bad qos", []string{"pairs", "--qos", "2"}, "qos 2 (want 0 or 1)"},
		{"bad profile", []string{"pairs", "--profile", "x"}, `profile "x"`},
		{"bad src", []string{"connect", "--src", "127.0.0.9-127.0.0.2"}, "parse source range"},
		{"bad target", []string{"connect", "--target", "nohost"}, `target "nohost"`},
		{"stray arg", []string{"connect", "extra"}, `unexpected argument "extra"`},
		{"offline closed loop", []string{"offline", "--rate", "0"}, "offline needs --rate > 0"},
		{"compare one target", []string{"compare", "--target", "a=127.0.0.1:1"}, "at least two --target"},
		{"compare bad target", []string{"compare", "--target", "127.0.0.1:1"}, "missing name="},
		{"compare start unknown", []string{"compare", "--target", "a=127.0.0.1:1", "--target", "b=127.0.0.1:2", "--start", "c=true"}, "no --target named c"},
		{"compare start malformed", []string{"compare", "--start", "nocommand"}, "want name=command"},
		{"compare capacity", []string{"compare", "--target", "a=127.0.0.1:1", "--target", "b=127.0.0.1:2", "--workload", "capacity"}, "cannot be compared"},
		{"too many per worker", []string{"connect", "--max-per-worker", "30000"}, "max-per-worker 30000"},
		{"slo-rss", []string{"capacity", "--slo-rss", "lots"}, `parse size "lots"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			rc := run(tc.args, &out, &errb)
			if rc != exitUsage {
				t.Errorf("exit %d, want %d", rc, exitUsage)
			}
			if !strings.Contains(errb.String(), tc.want) {
				t.Errorf("stderr %q lacks %q", errb.String(), tc.want)
			}
		})
	}
}

func TestUnreachableFailsFast(t *testing.T) {
	// A port nobody listens on: connect is refused at once.
	addr := "127.0.0.1:" + freeClosedPort(t)
	for _, w := range []string{"connect", "pairs", "offline"} {
		t.Run(w, func(t *testing.T) {
			var out, errb bytes.Buffer
			probe := testenv.StartStallProbe()
			start := time.Now()
			args := []string{w, "--target", addr, "--quiet"}
			if w != "connect" {
				args = append(args, "--rate", "10")
			}
			rc := run(args, &out, &errb)
			if rc != exitRun {
				t.Errorf("exit %d, want %d", rc, exitRun)
			}
			if !strings.Contains(errb.String(), addr) || !strings.Contains(errb.String(), "unreachable") {
				t.Errorf("stderr %q does not name %s as unreachable", errb.String(), addr)
			}
			// Fast: 10 s, plus whatever the machine stalled this process
			// (a loaded machine cannot fail it; a run that waits out its
			// schedule still does).
			d := time.Since(start)
			if _, stalled := probe.Stop(); d > 10*time.Second+stalled {
				t.Errorf("took %s (%s of it stalled) to report an unreachable target", d, stalled)
			}
		})
	}
}

func TestJSONOutput(t *testing.T) {
	var out, errb bytes.Buffer
	rc := run([]string{"connect", "--target", "127.0.0.1:" + freeClosedPort(t), "--json"}, &out, &errb)
	if rc != exitRun || out.Len() != 0 {
		t.Fatalf("exit %d, stdout %q: a failed run prints no report", rc, out.String())
	}
}

func TestUnusableSourceFailsFast(t *testing.T) {
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	// 192.0.2.0/24 (TEST-NET-1) is configured on no interface here.
	var out, errb bytes.Buffer
	rc := run([]string{"connect", "--target", l.Addr().String(), "--src", "192.0.2.1-192.0.2.2", "--quiet"}, &out, &errb)
	if rc != exitRun || !strings.Contains(errb.String(), "from source 192.0.2.1") {
		t.Errorf("exit %d, stderr %q: want exit %d naming the source address", rc, errb.String(), exitRun)
	}
}

// TestExternalVerbs checks record and replay are dispatched to bench/capture
// (whose own tests hold their help text).
func TestExternalVerbs(t *testing.T) {
	for _, v := range []string{"record", "replay"} {
		t.Run(v, func(t *testing.T) {
			var out, errb bytes.Buffer
			if rc := run([]string{v, "--help"}, &out, &errb); rc != exitOK || out.Len() == 0 {
				t.Errorf("%s --help: exit %d, %d bytes of help", v, rc, out.Len())
			}
			out.Reset()
			errb.Reset()
			if rc := run([]string{v, "--bogus"}, &out, &errb); rc != exitUsage || !strings.Contains(errb.String(), "-bogus") {
				t.Errorf("%s --bogus: exit %d, stderr %q", v, rc, errb.String())
			}
		})
	}
}

func TestVersion(t *testing.T) {
	var out, errb bytes.Buffer
	if code := run([]string{"--version"}, &out, &errb); code != exitOK {
		t.Fatalf("edgebench --version: exit %d, %s", code, errb.String())
	}
	if !regexp.MustCompile(`^edgebench dev( \(commit [0-9a-f]{12}(\+dirty)?, [0-9T:-]+Z\))? go\S+ \S+/\S+\n$`).Match(out.Bytes()) {
		t.Fatalf("edgebench --version = %q", out.String())
	}
}
