package main

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edgedhq/edged/internal/testenv"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata")

// TestMain lets tests run this binary as edgectl itself (in a child
// process, e.g. inside a network namespace) by setting EDGECTL_TEST_AS_MAIN.
func TestMain(m *testing.M) {
	if os.Getenv("EDGECTL_TEST_AS_MAIN") == "1" {
		if os.Getenv("EDGECTL_TEST_REQUIRE_NETNS") == "1" {
			// Global keys such as tcp_mem are hidden outside the initial
			// network namespace; seeing one means we are on the host.
			if _, err := os.Stat("/proc/sys/net/ipv4/tcp_mem"); err == nil {
				fmt.Fprintln(os.Stderr, "refusing to run: this is the host's network namespace")
				os.Exit(3)
			}
		}
		os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
	}
	os.Exit(m.Run())
}

func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	testenv.Golden(t, filepath.Join("testdata", name), got, *update)
}

// helpCase is one edgectl command line whose stdout must match
// testdata/<golden>.
type helpCase struct {
	golden string
	args   []string
}

// helpGolden runs each case in a subtest named after its golden file; the
// command must exit 0 with nothing on stderr.
func helpGolden(t *testing.T, cases []helpCase) {
	t.Helper()
	for _, tt := range cases {
		t.Run(tt.golden, func(t *testing.T) {
			out, errOut, code := edgectl(tt.args...)
			if code != exitOK || errOut != "" {
				t.Fatalf("edgectl %v: exit %d, stderr %q", tt.args, code, errOut)
			}
			golden(t, tt.golden, []byte(out))
		})
	}
}

func edgectl(args ...string) (stdout, stderr string, code int) {
	var o, e bytes.Buffer
	code = run(args, &o, &e)
	return o.String(), e.String(), code
}

// TestHelpGolden pins the --help output of edgectl and of each verb.
func TestHelpGolden(t *testing.T) {
	helpGolden(t, []helpCase{
		{"help.golden", []string{"--help"}},
		{"tune-help.golden", []string{"tune", "--help"}},
		{"tune-plan-help.golden", []string{"tune", "plan", "--help"}},
		{"tune-apply-help.golden", []string{"tune", "apply", "-h"}},
		{"tune-rollback-help.golden", []string{"tune", "rollback", "--help"}},
		{"tune-export-help.golden", []string{"tune", "export", "--help"}},
	})
}

func TestVersion(t *testing.T) {
	out, _, code := edgectl("--version")
	if code != exitOK || !strings.HasPrefix(out, "edgectl "+version+" go") {
		t.Fatalf("--version: exit %d, %q", code, out)
	}
}

func TestRegisterTwicePanics(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Fatal("registering tune twice did not panic")
		}
	}()
	register(command{name: "tune"})
}
