package main

// Zero-downtime upgrade, the process part: on SIGUSR2 (or POST /upgrade,
// edgectl upgrade) the running edged starts the binary at its own path
// with its own flags and the environment variable below naming one end of
// a unix socket pair. The two speak a line protocol over it:
//
//	new -> old  "edged-handoff <version> <pid> drain\n"
//	old -> new  "refuse <why>\n"                      (the old goes on)
//	old -> new  "state <listeners> <lock 0|1> <conns> <state bytes>\n",
//	            the descriptors (SCM_RIGHTS, in batches), then the state bytes
//	old -> new  "drain <listeners> <lock 0|1>\n", the descriptors
//	            (versions differ: listeners and the store's lock only)
//	new -> old  "ok\n" once it serves, or "fail <why>\n"
//
// <listeners> is the number of listening sockets per address group,
// comma-separated. The old process freezes its loops before it sends the
// state and, on "ok", exits without closing a carried connection; on
// anything else (a refusal, a failure, a timeout, the new process dying)
// it thaws and goes on serving, and logs why.
//
// The hello, "refuse" and "drain" lines are the part every version keeps:
// a binary whose handoff format differs (it cannot read this one's state)
// but says "drain" takes the listeners and the store's lock and recovers
// from the log, as at a restart; the old process then closes its
// connections at --upgrade-drain-rate, and their clients reconnect to the
// new one. WebSocket connections, which the format does not carry yet, are
// closed the same way after an ordinary handoff (each with a close frame
// 1001 first).

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/edgedhq/edged/edge"
)

const handoffEnv = "EDGED_HANDOFF_FD"

// defaultDrainRate is --upgrade-drain-rate's default: reconnects per
// second a new process takes without a storm (a TLS handshake costs a
// loop about 0.5 ms; see BENCHMARKS.md, "Handshakes per second").
const defaultDrainRate = 2000

// handoffFormat, set with -ldflags "-X main.handoffFormat=N", makes the
// binary announce another handoff format than edge.HandoffVersion: the
// tests build a "future" binary with it to exercise the drain.
var handoffFormat string

func announcedFormat() int {
	if v, err := strconv.Atoi(handoffFormat); err == nil {
		return v
	}
	return edge.HandoffVersion
}

// upgradeStatus is what GET /upgrade tells (edgectl upgrade polls it).
type upgradeStatus struct {
	mu        sync.Mutex
	attempts  int
	running   bool
	lastError string
}

func (u *upgradeStatus) begin() {
	u.mu.Lock()
	u.attempts++
	u.running, u.lastError = true, ""
	u.mu.Unlock()
}

func (u *upgradeStatus) end(err error) {
	u.mu.Lock()
	u.running = false
	if err != nil {
		u.lastError = err.Error()
	}
	u.mu.Unlock()
}

func (u *upgradeStatus) write(w http.ResponseWriter, code int) {
	u.mu.Lock()
	v := map[string]any{"pid": os.Getpid(), "attempts": u.attempts, "running": u.running, "last_error": u.lastError}
	u.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v)
}

// handoffTimeout bounds each wait of the protocol (the new binary's start,
// its recovery of the store's position, its adoption of the connections).
const handoffTimeout = 60 * time.Second

// fdBatch is how many descriptors one SCM_RIGHTS message carries (the
// kernel's SCM_MAX_FD is 253).
const fdBatch = 250

// upgrade hands s over to a new process running exe with args. It returns
// the new pid once that process serves; on error s is serving again.
//
// Socket steering is detached before the freeze (a socket can be in one
// socket array only: the new process attaches its own) and attached again
// by resume if the new process does not take over.
func upgrade(s *edge.Server, p *ops, exe string, args []string, drainRate int, log *slog.Logger) (int, error) {
	// SOCK_CLOEXEC is not on every OS (darwin): close-on-exec is set
	// after; the child's end reaches it through ExtraFiles anyway.
	sp, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM, 0)
	if err != nil {
		return 0, fmt.Errorf("upgrade: %w", os.NewSyscallError("socketpair", err))
	}
	unix.CloseOnExec(sp[0])
	unix.CloseOnExec(sp[1])
	parent, child := os.NewFile(uintptr(sp[0]), "handoff"), os.NewFile(uintptr(sp[1]), "handoff-child")
	defer parent.Close()
	cmd := exec.Command(exe, args...)
	cmd.Env = append(os.Environ(), handoffEnv+"=3")
	cmd.ExtraFiles = []*os.File{child}
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	err = cmd.Start()
	child.Close()
	if err != nil {
		return 0, fmt.Errorf("upgrade: start %s: %w", exe, err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	fail := func(err error) (int, error) {
		cmd.Process.Kill()
		<-exited
		return 0, err
	}
	fc, err := net.FileConn(parent)
	if err != nil {
		return fail(fmt.Errorf("upgrade: %w", err))
	}
	uc := fc.(*net.UnixConn)
	defer uc.Close()
	uc.SetDeadline(time.Now().Add(handoffTimeout))
	rd := bufio.NewReader(uc)
	hello, err := rd.ReadString('\n')
	if err != nil {
		select {
		case werr := <-exited:
			return 0, fmt.Errorf("upgrade: the new binary exited before the handoff (%v)", werr)
		case <-time.After(time.Second):
			return fail(fmt.Errorf("upgrade: no hello from the new binary: %w", err))
		}
	}
	var version, pid int
	if _, err := fmt.Sscanf(hello, "edged-handoff %d %d", &version, &pid); err != nil {
		return fail(fmt.Errorf("upgrade: bad hello %q", strings.TrimSpace(hello)))
	}
	drain := version != edge.HandoffVersion
	if drain && !slices.Contains(strings.Fields(hello)[3:], "drain") {
		fmt.Fprintf(uc, "refuse handoff format %d, the running edged speaks %d: restart it instead (clients reconnect)\n", version, edge.HandoffVersion)
		<-exited
		return 0, fmt.Errorf("upgrade: the new binary speaks handoff format %d, this one %d, and cannot drain: refused", version, edge.HandoffVersion)
	}
	if drain {
		log.Warn("upgrade: the new binary speaks another handoff format: it takes the listeners and the store, and this process closes its connections gradually", "new_format", version, "format", edge.HandoffVersion, "drain_rate", drainRate)
	}
	t0 := time.Now()
	p.detach()
	h, err := s.Freeze()
	if err != nil {
		fmt.Fprintf(uc, "refuse %v\n", err)
		<-exited
		if serr := p.attachSteering(s); serr != nil {
			log.Error("upgrade: socket steering not attached again", "err", serr)
		}
		return 0, fmt.Errorf("upgrade: %w", err)
	}
	resume := func(why error) (int, error) {
		cmd.Process.Kill()
		<-exited
		if err := s.Resume(); err != nil {
			log.Error("upgrade: resumed, but the admin API did not come back", "err", err)
		}
		if err := p.attachSteering(s); err != nil {
			log.Error("upgrade: resumed, but socket steering was not attached again", "err", err)
		}
		return 0, why
	}
	var fds []int
	var shape []string
	for _, g := range h.Listeners {
		fds = append(fds, g...)
		shape = append(shape, strconv.Itoa(len(g)))
	}
	lock := 0
	if h.Lock != nil {
		fds = append(fds, int(h.Lock.Fd()))
		lock = 1
	}
	header := fmt.Sprintf("drain %s %d\n", strings.Join(shape, ","), lock)
	if drain {
		h.Drain, h.State = true, nil
	} else {
		fds = append(fds, h.Conns...)
		header = fmt.Sprintf("state %s %d %d %d\n", strings.Join(shape, ","), lock, len(h.Conns), len(h.State))
	}
	if _, err := io.WriteString(uc, header); err != nil {
		return resume(fmt.Errorf("upgrade: %w", err))
	}
	for len(fds) > 0 {
		n := min(len(fds), fdBatch)
		if _, _, err := uc.WriteMsgUnix([]byte{'F'}, unix.UnixRights(fds[:n]...), nil); err != nil {
			return resume(fmt.Errorf("upgrade: send descriptors: %w", err))
		}
		fds = fds[n:]
	}
	if _, err := uc.Write(h.State); err != nil {
		return resume(fmt.Errorf("upgrade: send state: %w", err))
	}
	uc.SetDeadline(time.Now().Add(handoffTimeout))
	reply, err := rd.ReadString('\n')
	if err != nil || reply != "ok\n" {
		if err == nil {
			err = errors.New(strings.TrimSpace(reply))
		}
		return resume(fmt.Errorf("upgrade: the new process did not take over: %w", err))
	}
	pause := time.Since(t0)
	log.Info("handed over", "new_pid", pid, "connections", len(h.Conns), "state_bytes", len(h.State), "frozen_ms", pause.Milliseconds(), "drain", drain)
	t1 := time.Now()
	n, err := s.FinishDrain(h, drainRate)
	if err != nil {
		log.Error("upgrade: finishing the old process", "err", err)
	}
	if n > 0 {
		log.Info("upgrade: drained the connections the new process did not take", "connections", n, "took_ms", time.Since(t1).Milliseconds(), "rate", drainRate)
	}
	return pid, nil
}

// takeHandoff is the new process's side: it says hello and reads the
// state. reply tells the old process how the start went.
func takeHandoff(fdEnv string) (h *edge.Handoff, reply func(error), err error) {
	fd, err := strconv.Atoi(fdEnv)
	if err != nil {
		return nil, nil, fmt.Errorf("take handoff: %s=%q", handoffEnv, fdEnv)
	}
	f := os.NewFile(uintptr(fd), "handoff")
	fc, err := net.FileConn(f)
	f.Close()
	if err != nil {
		return nil, nil, fmt.Errorf("take handoff: %w", err)
	}
	uc := fc.(*net.UnixConn)
	// send, not reply, in the deferred call: a failing return sets the
	// named results to nil before it runs.
	send := func(err error) {
		if err == nil {
			io.WriteString(uc, "ok\n")
		} else {
			fmt.Fprintf(uc, "fail %s\n", strings.ReplaceAll(err.Error(), "\n", " "))
		}
		uc.Close()
	}
	defer func() {
		if err != nil {
			send(err)
		}
	}()
	uc.SetDeadline(time.Now().Add(handoffTimeout))
	if _, err := fmt.Fprintf(uc, "edged-handoff %d %d drain\n", announcedFormat(), os.Getpid()); err != nil {
		return nil, nil, fmt.Errorf("take handoff: %w", err)
	}
	// The header line and the descriptors are read without a buffered
	// reader, so that no byte of what follows is read ahead of its
	// SCM_RIGHTS message.
	line, err := readLine(uc)
	if err != nil {
		return nil, nil, fmt.Errorf("take handoff: %w", err)
	}
	if why, ok := strings.CutPrefix(line, "refuse "); ok {
		return nil, nil, fmt.Errorf("take handoff: the running edged refused: %s", why)
	}
	var shape string
	var nconns, lock, nstate int
	drain := strings.HasPrefix(line, "drain ")
	if drain {
		_, err = fmt.Sscanf(line, "drain %s %d", &shape, &lock)
	} else {
		_, err = fmt.Sscanf(line, "state %s %d %d %d", &shape, &lock, &nconns, &nstate)
	}
	if err != nil || lock < 0 || lock > 1 || nconns < 0 || nconns > maxHandoffFDs || nstate < 0 || nstate > maxHandoffState {
		return nil, nil, fmt.Errorf("take handoff: bad header %q", line)
	}
	var groups []int
	total := nconns + lock
	for _, g := range strings.Split(shape, ",") {
		n, err := strconv.Atoi(g)
		if err != nil || n < 0 || n > maxHandoffFDs {
			return nil, nil, fmt.Errorf("take handoff: bad header %q", line)
		}
		groups = append(groups, n)
		total += n
	}
	if total > maxHandoffFDs {
		return nil, nil, fmt.Errorf("take handoff: bad header %q: %d descriptors", line, total)
	}
	var fds []int
	lockFD, lockFile := -1, (*os.File)(nil)
	defer func() {
		if err != nil { // what came is not anyone's: the old process keeps its own
			for _, fd := range fds {
				if fd != lockFD {
					unix.Close(fd)
				}
			}
			if lockFile != nil {
				lockFile.Close()
			}
		}
	}()
	oob := make([]byte, unix.CmsgSpace(fdBatch*4))
	for len(fds) < total {
		var b [1]byte
		_, oobn, _, _, err := uc.ReadMsgUnix(b[:], oob)
		if err != nil {
			return nil, nil, fmt.Errorf("take handoff: receive descriptors: %w", err)
		}
		msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
		if err != nil {
			return nil, nil, fmt.Errorf("take handoff: %w", err)
		}
		for _, m := range msgs {
			got, err := unix.ParseUnixRights(&m)
			if err != nil {
				return nil, nil, fmt.Errorf("take handoff: %w", err)
			}
			for _, fd := range got {
				unix.CloseOnExec(fd)
			}
			fds = append(fds, got...)
		}
	}
	if len(fds) != total {
		return nil, nil, fmt.Errorf("take handoff: %d descriptors, the header says %d", len(fds), total)
	}
	h = &edge.Handoff{Version: edge.HandoffVersion, Drain: drain}
	rest := fds
	for _, n := range groups {
		h.Listeners = append(h.Listeners, rest[:n])
		rest = rest[n:]
	}
	if lock == 1 {
		lockFD = rest[0]
		lockFile = os.NewFile(uintptr(lockFD), "LOCK") // it owns lockFD now
		h.Lock = lockFile
		rest = rest[1:]
	}
	h.Conns = rest
	// Read as it comes, not into a buffer of the announced size: a
	// corrupt count fails at the end of the stream, not in an allocation.
	var state bytes.Buffer
	if _, err = io.CopyN(&state, uc, int64(nstate)); err != nil {
		return nil, nil, fmt.Errorf("take handoff: read state (%d of %d bytes): %w", state.Len(), nstate, err)
	}
	h.State = state.Bytes()
	return h, send, nil
}

// The header's bounds: more descriptors than a process may hold, or more
// state than any memory, is a corrupt header, refused at once (the state
// is read as it comes, so a count under the bound costs only what arrives).
const (
	maxHandoffFDs   = 1 << 24
	maxHandoffState = 1 << 40
)

// readLine reads one line a byte at a time (see takeHandoff).
func readLine(c net.Conn) (string, error) {
	var sb strings.Builder
	var b [1]byte
	for sb.Len() < 4096 {
		if _, err := c.Read(b[:]); err != nil {
			return "", err
		}
		if b[0] == '\n' {
			return sb.String(), nil
		}
		sb.WriteByte(b[0])
	}
	return "", errors.New("line too long")
}
