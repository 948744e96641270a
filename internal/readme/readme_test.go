// Package readme runs the console examples of the repository's README.md
// against a fresh build, so that what the README promises a new user is
// what happens.
package readme

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/edgedhq/edged/internal/testenv"
)

// A step is one `$ command` of a README console block and the output the
// README shows under it.
type step struct {
	line int // in README.md
	cmd  string
	want []string
}

// blocks returns the README's console blocks: fenced blocks without a
// language whose lines start with "$ ". They run in one shell session, in
// order, as a reader follows them (a server started in one block serves
// the next).
func blocks(t *testing.T, readme string) [][]step {
	f, err := os.Open(readme)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out [][]step
	var cur []step
	in, console := false, false
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		l := sc.Text()
		switch {
		case strings.HasPrefix(l, "```") && !in:
			in, console, cur = true, l == "```", nil
		case strings.HasPrefix(l, "```"):
			in = false
			if console && len(cur) > 0 {
				out = append(out, cur)
			}
		case in && console && strings.HasPrefix(l, "$ "):
			cur = append(cur, step{line: n, cmd: strings.TrimPrefix(l, "$ ")})
		case in && console && len(cur) > 0 && strings.TrimSpace(l) != "":
			cur[len(cur)-1].want = append(cur[len(cur)-1].want, l)
		}
	}
	return out
}

var (
	timePrefix = regexp.MustCompile(`^time=\S+ `)
	number     = regexp.MustCompile(`[0-9]+`)
	space      = regexp.MustCompile(`\s+`)
	comment    = regexp.MustCompile(`\s+#\s.*$`)
)

// shape is a line with what differs from run to run folded: the log's
// timestamp, every number, runs of white space.
func shape(l string) string {
	l = timePrefix.ReplaceAllString(l, "")
	l = number.ReplaceAllString(l, "N")
	return strings.TrimSpace(space.ReplaceAllString(l, " "))
}

// subsequence reports whether every wanted line's shape appears in got, in
// order (got may hold more lines: a log line the README leaves out).
func subsequence(want, got []string) (missing string, ok bool) {
	i := 0
	for _, w := range want {
		ws := shape(w)
		for i < len(got) && shape(got[i]) != ws {
			i++
		}
		if i == len(got) {
			return w, false
		}
		i++
	}
	return "", true
}

// background: edged runs until the test ends (the README runs it in
// another terminal, or with &).
func background(cmd string) (string, bool) {
	c := strings.TrimSpace(comment.ReplaceAllString(cmd, ""))
	if s, ok := strings.CutSuffix(c, "&"); ok {
		return strings.TrimSpace(s), true
	}
	return c, strings.HasPrefix(c, "./bin/edged")
}

// TestReadmeExamples runs every console block of README.md in a shell of
// its own, in a scratch directory whose bin/ holds a fresh build, and
// checks each command's output has the shape the README shows.
func TestReadmeExamples(t *testing.T) {
	for _, tool := range []string{"mosquitto_pub", "mosquitto_sub", "bash"} {
		_, err := exec.LookPath(tool)
		testenv.Require(t, err == nil, tool+" not installed (apt-get install mosquitto-clients): README's examples use it")
	}
	for _, addr := range []string{"127.0.0.1:1883", "127.0.0.1:9090", "127.0.0.2:1884"} {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			t.Fatalf("README's examples use %s, which is taken on this host (%v): stop what listens there", addr, err)
		}
		ln.Close()
	}
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	work := t.TempDir()
	build := exec.Command("go", "build", "-buildvcs=auto", "-o", filepath.Join(work, "bin")+"/", "./cmd/...")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	bs := blocks(t, filepath.Join(root, "README.md"))
	if len(bs) < 2 {
		t.Fatalf("README.md has %d console blocks; the quick start alone has more", len(bs))
	}
	var all []step
	for _, b := range bs {
		all = append(all, b...)
	}
	runSteps(t, work, all)
}

// runSteps runs the steps in one bash, command by command; a background
// command's output is read until it shows what the README shows (a server
// that has started) or 5 s pass.
func runSteps(t *testing.T, work string, steps []step) {
	sh := exec.Command("bash", "--noprofile", "--norc")
	sh.Dir = work
	sh.Env = append(os.Environ(), "PATH="+filepath.Join(work, "bin")+":"+os.Getenv("PATH"))
	in, err := sh.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	sh.Stdout, sh.Stderr = io.Discard, io.Discard
	if err := sh.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		fmt.Fprintln(in, `kill $(jobs -p) 2>/dev/null; wait; exit`)
		in.Close()
		done := make(chan error, 1)
		go func() { done <- sh.Wait() }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			sh.Process.Kill()
			t.Error("the block's shell did not exit after its jobs were killed")
		}
	}()
	for i, st := range steps {
		cmd, bg := background(st.cmd)
		out := filepath.Join(work, fmt.Sprintf("out.%d", i))
		rc := out + ".rc"
		if cmd == "make build" {
			continue // done above, into bin/
		}
		q := "'" + strings.ReplaceAll(cmd, "'", `'\''`) + "'"
		if bg {
			// exec: the job is the server itself, so killing the jobs stops it.
			q = "'exec " + strings.ReplaceAll(cmd, "'", `'\''`) + "'"
			fmt.Fprintf(in, "eval %s > %s 2>&1 < /dev/null &\necho started > %s\n", q, out, rc)
		} else {
			fmt.Fprintf(in, "eval %s > %s 2>&1 < /dev/null; echo $? > %s\n", q, out, rc)
		}
		deadline := time.Now().Add(30 * time.Second)
		for {
			if _, err := os.Stat(rc); err == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("README.md:%d: %s: still running after 30 s", st.line, st.cmd)
			}
			time.Sleep(20 * time.Millisecond)
		}
		var got []string
		for end := time.Now().Add(5 * time.Second); ; {
			b, _ := os.ReadFile(out)
			got = strings.Split(strings.TrimRight(string(b), "\n"), "\n")
			if _, ok := subsequence(st.want, got); ok || !bg || time.Now().After(end) {
				break
			}
			time.Sleep(50 * time.Millisecond) // a server still starting
		}
		if missing, ok := subsequence(st.want, got); !ok {
			t.Errorf("README.md:%d: $ %s\nREADME shows %q (shape %q), which the output lacks:\n%s",
				st.line, st.cmd, missing, shape(missing), strings.Join(got, "\n"))
		}
	}
}
