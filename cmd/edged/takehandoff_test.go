package main

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// oldSide plays the running edged of an upgrade on one end of a socket
// pair: it reads the hello, sends header and then descriptors (one
// SCM_RIGHTS message), and returns the new side's reply line.
func oldSide(t *testing.T, header string, fds []int) (newFD int, reply chan string) {
	t.Helper()
	pair, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	f := os.NewFile(uintptr(pair[0]), "old")
	c, err := net.FileConn(f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	reply = make(chan string, 1)
	go func() {
		r := bufio.NewReader(c)
		if _, err := r.ReadString('\n'); err != nil { // the hello
			c.Close()
			reply <- "no hello: " + err.Error()
			return
		}
		uc := c.(*net.UnixConn)
		uc.Write([]byte(header + "\n"))
		if len(fds) > 0 {
			uc.WriteMsgUnix([]byte{0}, unix.UnixRights(fds...), nil)
		}
		uc.CloseWrite() // nothing more comes: a state announced longer ends early
		line, _ := r.ReadString('\n')
		c.Close() // before the reply: the test counts descriptors then
		reply <- strings.TrimSpace(line)
	}()
	return pair[1], reply
}

// openFDs counts this process's open descriptors.
func openFDs(t *testing.T) int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("no /proc/self/fd: %v", err)
	}
	return len(ents)
}

// TestTakeHandoffRefusesBadHeaders: a header with negative or absurd
// counts, or more descriptors than it announces, is refused with a "fail"
// reply to the old process (which then thaws and serves on), and the
// descriptors that came are closed, not leaked.
func TestTakeHandoffRefusesBadHeaders(t *testing.T) {
	for _, tc := range []struct {
		name, header string
		send         int
	}{
		{"negative group", "state 2,-1 0 0 0", 0},
		{"negative state", "state 1 0 0 -5", 1},
		{"huge state", fmt.Sprintf("state 1 0 0 %d", int64(1)<<50), 1},
		{"state longer than sent", fmt.Sprintf("state 1 0 0 %d", int64(1)<<39), 1}, // under the bound: read until the stream ends, not allocated
		{"huge connection count", fmt.Sprintf("state 1 0 %d 0", 1<<30), 1},
		{"more descriptors than announced", "state 1 0 0 0", 3},
		{"not a number", "drain x 0", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var fds []int
			for range tc.send {
				r, w, err := os.Pipe()
				if err != nil {
					t.Fatal(err)
				}
				defer r.Close()
				defer w.Close()
				fds = append(fds, int(r.Fd()))
			}
			before := openFDs(t)
			fd, reply := oldSide(t, tc.header, fds)
			h, _, err := takeHandoff(fmt.Sprint(fd))
			if err == nil {
				t.Fatalf("header %q accepted: %+v", tc.header, h)
			}
			if got := <-reply; !strings.HasPrefix(got, "fail ") {
				t.Fatalf("old side got %q, want a fail line", got)
			}
			if after := openFDs(t); after > before {
				t.Fatalf("%d descriptors open after, %d before: the ones received leaked (%v)", after, before, err)
			}
		})
	}
}
