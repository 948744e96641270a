package bench

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// ServerSample is one reading of the server under test.
type ServerSample struct {
	T       float64            `json:"t"`               // seconds since the run started
	RSS     int64              `json:"rss_bytes"`       // resident set of the process tree
	CPU     float64            `json:"cpu_seconds"`     // user+sys of the process tree, cumulative
	Threads int                `json:"threads"`         // threads of the process tree
	Admin   map[string]float64 `json:"admin,omitempty"` // numeric fields of the admin /stats JSON
}

// clockTicks is USER_HZ, the unit of utime/stime in /proc/PID/stat; it is
// 100 on every Linux architecture Go supports (proc(5), times(2)).
const clockTicks = 100

// procStat reads one process: RSS bytes (statm), CPU seconds and threads (stat).
func procStat(pid int) (rss int64, cpu float64, threads int, ppid int, err error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, 0, 0, 0, fmt.Errorf("read process %d stat: %w", pid, err)
	}
	// The command name may hold spaces and parentheses: fields start after the last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, 0, 0, 0, fmt.Errorf("parse process %d stat: %w", pid, ErrMalformed)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 22 {
		return 0, 0, 0, 0, fmt.Errorf("parse process %d stat: %w", pid, ErrMalformed)
	}
	// f[0] is field 3 (state): field k is f[k-3].
	ppid, _ = strconv.Atoi(f[1])
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	threads, _ = strconv.Atoi(f[17])
	rssPages, _ := strconv.ParseInt(f[21], 10, 64)
	return rssPages * int64(os.Getpagesize()), float64(ut+st) / clockTicks, threads, ppid, nil
}

// sampleTree reads pid and all its descendants.
func sampleTree(pid int) (ServerSample, error) {
	var s ServerSample
	rss, cpu, th, _, err := procStat(pid)
	if err != nil {
		return s, err
	}
	s.RSS, s.CPU, s.Threads = rss, cpu, th
	ents, _ := filepath.Glob("/proc/[0-9]*")
	parent := map[int]int{}
	for _, e := range ents {
		p, err := strconv.Atoi(filepath.Base(e))
		if err != nil || p == pid {
			continue
		}
		if _, _, _, pp, err := procStat(p); err == nil {
			parent[p] = pp
		}
	}
	for p := range parent {
		for a, hops := parent[p], 0; hops < 64; a, hops = parent[a], hops+1 {
			if a == pid {
				if r, c, t, _, err := procStat(p); err == nil {
					s.RSS += r
					s.CPU += c
					s.Threads += t
				}
				break
			}
			if a == 0 {
				break
			}
		}
	}
	return s, nil
}

// adminStats GETs an admin /stats URL and keeps its top-level numbers.
// adminStats GETs a flat JSON object of numbers. With EDGED_ADMIN_TOKEN in
// the environment it sends the token as edged's admin API wants it
// (Authorization: Bearer, as edgectl does).
func adminStats(c *http.Client, url string) (map[string]float64, error) {
	req, err := http.NewRequest("GET", url, nil)
	if err != nil {
		return nil, fmt.Errorf("get admin stats: %w", err)
	}
	if tok := strings.TrimSpace(os.Getenv("EDGED_ADMIN_TOKEN")); tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, fmt.Errorf("get admin stats: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("get admin stats: status %s", resp.Status)
	}
	var m map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&m); err != nil {
		return nil, fmt.Errorf("decode admin stats: %w", err)
	}
	out := map[string]float64{}
	for k, v := range m {
		if f, ok := v.(float64); ok {
			out[k] = f
		}
	}
	return out, nil
}

// sampler reads the server once a second in the background.
type sampler struct {
	pid       int
	admin     string
	adminErrs int // consecutive failed admin reads
	start     time.Time
	samples   chan ServerSample
	stopc     chan struct{}
}

// adminGiveUp is how many admin reads in a row may fail (800 ms timeouts
// on a loaded machine, a restart) before the endpoint is taken for absent.
const adminGiveUp = 5

func startSampler(pid int, admin string, start time.Time) *sampler {
	s := &sampler{pid: pid, admin: admin, start: start, samples: make(chan ServerSample, 4096), stopc: make(chan struct{})}
	if pid == 0 && admin == "" {
		return s
	}
	go s.loop()
	return s
}

func (s *sampler) read(client *http.Client) (ServerSample, bool) {
	var x ServerSample
	ok := false
	if s.pid > 0 {
		if v, err := sampleTree(s.pid); err == nil {
			x, ok = v, true
		}
	}
	if s.admin != "" {
		if m, err := adminStats(client, s.admin); err == nil {
			x.Admin, ok = m, true
			s.adminErrs = 0
		} else if s.adminErrs++; s.adminErrs >= adminGiveUp {
			s.admin = "" // absent or broken: skip from now on
		}
	}
	x.T = time.Since(s.start).Seconds()
	return x, ok
}

func (s *sampler) loop() {
	client := &http.Client{Timeout: 800 * time.Millisecond}
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		if x, ok := s.read(client); ok {
			select {
			case s.samples <- x:
			default:
			}
		}
		select {
		case <-s.stopc:
			return
		case <-t.C:
		}
	}
}

func (s *sampler) stop() {
	if s.pid != 0 || s.admin != "" {
		close(s.stopc)
	}
}

// now takes one synchronous reading of the process tree (no admin).
func (s *sampler) now() (ServerSample, bool) {
	if s.pid <= 0 {
		return ServerSample{}, false
	}
	v, err := sampleTree(s.pid)
	v.T = time.Since(s.start).Seconds()
	return v, err == nil
}

// groupMembers adds (or removes) users to an edged group through the admin
// API next to the stats URL: PUT (DELETE) <base>/groups/<group>/members/<user>.
func groupMembers(statsURL, group string, users []string, add bool) error {
	base, ok := strings.CutSuffix(statsURL, "/stats")
	if !ok {
		return fmt.Errorf("derive admin base from %q (want .../stats): %w", statsURL, ErrBadOption)
	}
	method := http.MethodPut
	if !add {
		method = http.MethodDelete
	}
	c := &http.Client{Timeout: 5 * time.Second}
	for _, u := range users {
		req, err := http.NewRequest(method, base+"/groups/"+group+"/members/"+u, nil)
		if err != nil {
			return fmt.Errorf("group member request: %w", err)
		}
		resp, err := c.Do(req)
		if err != nil {
			return fmt.Errorf("%s group %s member %s: %w", method, group, u, err)
		}
		resp.Body.Close()
		if resp.StatusCode >= 300 && !(method == http.MethodDelete && resp.StatusCode == http.StatusNotFound) {
			return fmt.Errorf("%s group %s member %s: status %s", method, group, u, resp.Status)
		}
	}
	return nil
}
