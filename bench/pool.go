package bench

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sync"
	"time"
)

// pool is the parent's view of its worker processes.
type pool struct {
	procs []*wproc
	ticks chan Tick
}

type wproc struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	enc    *json.Encoder
	stderr *limitedWriter
	done   chan struct{} // closed when stdout is drained
}

// startPool starts one worker process per setup. On error no process is left.
func startPool(setups []Setup) (p *pool, err error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("find own executable: %w", err)
	}
	p = &pool{ticks: make(chan Tick, 64*len(setups))}
	defer func() {
		if err != nil {
			p.kill()
		}
	}()
	for _, s := range setups {
		cmd := exec.Command(exe)
		cmd.Env = append(os.Environ(), workerEnv+"=1")
		cmd.SysProcAttr = workerAttr()
		w := &wproc{cmd: cmd, stderr: &limitedWriter{w: &bytes.Buffer{}, n: 64 << 10}, done: make(chan struct{})}
		cmd.Stderr = w.stderr
		if w.stdin, err = cmd.StdinPipe(); err != nil {
			return p, fmt.Errorf("start worker %d: %w", s.Worker, err)
		}
		out, err := cmd.StdoutPipe()
		if err != nil {
			return p, fmt.Errorf("start worker %d: %w", s.Worker, err)
		}
		if err := cmd.Start(); err != nil {
			return p, fmt.Errorf("start worker %d: %w", s.Worker, err)
		}
		p.procs = append(p.procs, w)
		w.enc = json.NewEncoder(w.stdin)
		if err := w.enc.Encode(s); err != nil {
			return p, fmt.Errorf("send setup to worker %d: %w", s.Worker, err)
		}
		go func(worker int) {
			defer close(w.done)
			sc := bufio.NewScanner(out)
			sc.Buffer(make([]byte, 1<<20), 64<<20)
			for sc.Scan() {
				var t Tick
				if json.Unmarshal(sc.Bytes(), &t) == nil {
					t.Worker = worker
					p.ticks <- t
				}
			}
		}(s.Worker)
	}
	return p, nil
}

// limitedWriter keeps the first n bytes of a worker's stderr for error messages.
type limitedWriter struct {
	mu sync.Mutex
	w  *bytes.Buffer
	n  int
}

func (l *limitedWriter) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if room := l.n - l.w.Len(); room > 0 {
		l.w.Write(b[:min(len(b), room)])
	}
	return len(b), nil
}

func (l *limitedWriter) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.String()
}

func (p *pool) send(i int, c Command) {
	_ = p.procs[i].enc.Encode(c) // a dead worker shows up as a missing final tick
}

func (p *pool) broadcast(f func(i int) Command) {
	for i := range p.procs {
		p.send(i, f(i))
	}
}

// stop asks every worker to disconnect and exit, waits up to timeout, then
// kills what is left. It always reaps every process.
func (p *pool) stop(timeout time.Duration) {
	for i := range p.procs {
		p.send(i, Command{Op: "stop"})
		_ = p.procs[i].stdin.Close()
	}
	deadline := time.After(timeout)
	for _, w := range p.procs {
		select {
		case <-w.done:
		case <-deadline:
			_ = w.cmd.Process.Kill()
			<-w.done
		}
	}
	for _, w := range p.procs {
		_ = w.cmd.Wait()
	}
}

// cpuSeconds is the user+system CPU time of the reaped workers.
func (p *pool) cpuSeconds() float64 {
	var s float64
	for _, w := range p.procs {
		if st := w.cmd.ProcessState; st != nil {
			s += (st.UserTime() + st.SystemTime()).Seconds()
		}
	}
	return s
}

func (p *pool) kill() {
	for _, w := range p.procs {
		_ = w.cmd.Process.Kill()
		_ = w.stdin.Close()
	}
	for _, w := range p.procs {
		<-w.done
		_ = w.cmd.Wait()
	}
}

// alive reports whether every worker still runs; otherwise it returns the
// first dead worker's error text.
func (p *pool) dead() (int, string, bool) {
	for i, w := range p.procs {
		select {
		case <-w.done:
			return i, w.stderr.String(), true
		default:
		}
	}
	return 0, "", false
}
