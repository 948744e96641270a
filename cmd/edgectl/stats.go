package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/edgedhq/edged/internal/obs"
)

func init() {
	register(command{name: "stats", summary: "print a live server's activity figures, loops, longest queues and alarms once", run: runStats})
}

// defaultAdmin is edged's default admin address.
const defaultAdmin = "http://127.0.0.1:9090"

// adminTokenEnv names the environment variable that holds the admin bearer
// token when --admin-token-file is not given.
const adminTokenEnv = "EDGED_ADMIN_TOKEN"

// adminFlags are the flags of every command that talks to a live server.
type adminFlags struct {
	admin, tokenFile string
	timeout          time.Duration
}

func (a *adminFlags) add(fs *flag.FlagSet) {
	fs.StringVar(&a.admin, "admin", defaultAdmin, "edged admin `URL` (or host:port)")
	fs.StringVar(&a.tokenFile, "admin-token-file", "", "`file` holding the admin bearer token (edged --admin-token-file); default: $"+adminTokenEnv)
	fs.DurationVar(&a.timeout, "timeout", 5*time.Second, "give up on the server after `DURATION`")
}

// adminClient talks to an edged admin endpoint.
type adminClient struct {
	base  string // scheme://host:port, no trailing slash
	token string // bearer token; "" sends no Authorization header
	hc    *http.Client
}

// client checks the flags and returns a client; a bad URL is a usage error.
func (a *adminFlags) client() (*adminClient, error) {
	raw := a.admin
	if !strings.Contains(raw, "://") {
		raw = "http://" + raw
	}
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || (u.Path != "" && u.Path != "/") {
		return nil, usagef("--admin %q: want http://HOST:PORT", a.admin)
	}
	if a.timeout <= 0 {
		return nil, usagef("--timeout must be positive")
	}
	token := strings.TrimSpace(os.Getenv(adminTokenEnv))
	if a.tokenFile != "" {
		b, err := os.ReadFile(a.tokenFile)
		if err != nil {
			return nil, fmt.Errorf("read admin token file: %w", err)
		}
		if token = strings.TrimSpace(string(b)); token == "" {
			return nil, fmt.Errorf("read admin token file %s: empty", a.tokenFile)
		}
	}
	d := &net.Dialer{Timeout: min(a.timeout, 3*time.Second)}
	tr := &http.Transport{DialContext: d.DialContext, DisableKeepAlives: true}
	return &adminClient{base: u.Scheme + "://" + u.Host, token: token, hc: &http.Client{Timeout: a.timeout, Transport: tr}}, nil
}

// do sends a request and returns the response if its status is 2xx; any
// other status becomes an error carrying the server's message.
func (c *adminClient) do(method, path string, body io.Reader, timeout time.Duration) (*http.Response, error) {
	req, err := http.NewRequest(method, c.base+path, body)
	if err != nil {
		return nil, fmt.Errorf("build request: %w", err)
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	hc := c.hc
	if timeout > 0 {
		cp := *c.hc
		cp.Timeout = timeout
		hc = &cp
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("reach edged admin at %s: %w", c.base, unwrapURLError(err))
	}
	if resp.StatusCode/100 != 2 {
		defer resp.Body.Close()
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
		var e struct{ Error string }
		if json.Unmarshal(msg, &e) == nil && e.Error != "" {
			msg = []byte(e.Error)
		}
		text := strings.TrimSpace(string(msg))
		if resp.StatusCode == http.StatusUnauthorized {
			hint := "give --admin-token-file or set $" + adminTokenEnv
			if c.token != "" {
				hint = "the admin token was refused"
			}
			text += "; " + hint
		}
		return nil, fmt.Errorf("%s %s: %s: %s", method, c.base+path, resp.Status, text)
	}
	return resp, nil
}

// getJSON decodes a GET's JSON answer into v.
func (c *adminClient) getJSON(path string, v any) error {
	resp, err := c.do("GET", path, nil, 0)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		return fmt.Errorf("decode %s%s: %w", c.base, path, err)
	}
	return nil
}

// unwrapURLError drops url.Error's repetition of the method and URL.
func unwrapURLError(err error) error {
	if ue, ok := err.(*url.Error); ok {
		return ue.Err
	}
	return err
}

func runStats(ctx *env, args []string) error {
	var a adminFlags
	fs := ctx.flags("stats", "[--admin URL] [--json] [--history N]")
	a.add(fs)
	asJSON := fs.Bool("json", false, "print the server's JSON snapshot as is")
	history := fs.Int("history", 0, "with --json, include the last `N` samples of each figure")
	if err := ctx.parse(fs, args); err != nil {
		return err
	}
	if *history < 0 {
		return usagef("--history must be >= 0")
	}
	c, err := a.client()
	if err != nil {
		return err
	}
	if *asJSON {
		resp, err := c.do("GET", fmt.Sprintf("/stats?history=%d", *history), nil, 0)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		_, err = io.Copy(ctx.stdout, resp.Body)
		return err
	}
	s, err := c.snapshot()
	if err != nil {
		return err
	}
	renderStats(ctx.stdout, s, c.base, false)
	return nil
}

// snapshot fetches /stats and checks that it is the activity reporter's.
func (c *adminClient) snapshot() (*obs.Snapshot, error) {
	var s obs.Snapshot
	if err := c.getJSON("/stats", &s); err != nil {
		return nil, err
	}
	if s.Figures == nil {
		return nil, fmt.Errorf("%s/stats has no activity figures: the server does not run the observability reporter", c.base)
	}
	return &s, nil
}

// renderStats writes the human view of a snapshot: edgectl stats prints it
// once (every figure), edgectl top every second in a frame that fits a
// 40-row terminal (compact: loop utilisation only in the loop table, close
// reasons on one line, host-wide TCP on one line, the five longest queues).
// Host-wide TCP counters (/proc/net) count every process's sockets, so they
// stand apart from edged's own figures in both views.
func renderStats(w io.Writer, s *obs.Snapshot, from string, compact bool) {
	fmt.Fprintf(w, "edged %s  %s  sample %d every %gs (took %.0fµs)  alarms %d (fired %d)\n\n",
		from, s.Time.UTC().Format(time.RFC3339), s.Samples, s.IntervalS, s.SampleCostUs, len(s.Alarms), s.AlarmsFired)
	var own, host, closes []obs.Figure
	zeros := 0
	for _, f := range s.Figures {
		switch {
		case strings.HasPrefix(f.Name, "tcp_"):
			host = append(host, f)
		case compact && strings.HasPrefix(f.Name, "closes_"):
			closes = append(closes, f)
		case compact && (strings.HasPrefix(f.Name, "loop") && strings.HasSuffix(f.Name, "_util") || topShownElsewhere[f.Name]):
			// in the loop table or the header
		case compact && f.Counter && f.Total == 0:
			zeros++
		default:
			own = append(own, f)
		}
	}
	figureTable(w, "FIGURE", own)
	if compact {
		if zeros > 0 {
			fmt.Fprintf(w, "(%d counters still at 0 not shown: edgectl stats lists every figure)\n", zeros)
		}
		var b strings.Builder
		for _, f := range closes {
			if f.Total > 0 {
				fmt.Fprintf(&b, "  %s %s/s (%s)", strings.TrimPrefix(f.Name, "closes_"), human(f.Value, ""), human(f.Total, ""))
			}
		}
		if b.Len() > 0 || len(host) > 0 {
			fmt.Fprintln(w)
		}
		if b.Len() > 0 {
			fmt.Fprintf(w, "closed by reason, now/s (total):%s\n", b.String())
		}
		if len(host) > 0 {
			fmt.Fprint(w, "host-wide TCP, every process (/proc/net):")
			for _, f := range host {
				if !topHostTCP[f.Name] {
					continue
				}
				v := human(f.Value, f.Unit)
				if f.Counter {
					v = human(f.Value, "") + "/s"
				}
				fmt.Fprintf(w, "  %s %s", strings.TrimPrefix(f.Name, "tcp_"), v)
			}
			fmt.Fprintln(w)
		}
	} else if len(host) > 0 {
		fmt.Fprintln(w)
		figureTable(w, "HOST-WIDE TCP (every process, /proc/net)", host)
	}
	renderLoopsAndQueues(w, s, compact)
}

// topShownElsewhere are the figures a top frame leaves out of its figure
// table because the loop table or the header shows them.
var topShownElsewhere = map[string]bool{"conns": true, "loop_queued_bytes": true, "loop_queue_len": true, "alarms": true}

// topHostTCP are the host-wide TCP figures a top frame shows on its one
// line: the ones that say a host is in trouble.
var topHostTCP = map[string]bool{"tcp_curr_estab": true, "tcp_listen_overflows": true, "tcp_listen_drops": true,
	"tcp_retrans_segs": true, "tcp_timeouts": true}

// figureTable writes figures as a table of right-aligned numbers under a
// left-aligned name column headed title.
func figureTable(w io.Writer, title string, figs []obs.Figure) {
	nameW := len(title)
	for _, f := range figs {
		nameW = max(nameW, len(f.Name))
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "%-*s\tNOW\tAVG 1s\tAVG 10s\tAVG 100s\tTOTAL\t\n", nameW, title)
	for _, f := range figs {
		total := ""
		if f.Counter {
			total = human(f.Total, strings.TrimSuffix(f.Unit, "/s"))
			if f.Unit == "cores" {
				total = fmt.Sprintf("%.1fs", f.Total) // CPU seconds
			}
		}
		fmt.Fprintf(tw, "%-*s\t%s\t%s\t%s\t%s\t%s\t\n", nameW, f.Name, human(f.Value, f.Unit), human(f.Avg1, f.Unit),
			human(f.Avg10, f.Unit), human(f.Avg100, f.Unit), total)
	}
	tw.Flush()
}

// topQueues is how many queues a compact (top) frame lists.
const topQueues = 5

func renderLoopsAndQueues(w io.Writer, s *obs.Snapshot, compact bool) {
	var tw *tabwriter.Writer
	if len(s.Loops) > 0 {
		fmt.Fprintln(w)
		tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintf(tw, "LOOP\tCONNS\tACCEPTS/s\tBUSY\tOUT QUEUED\tXLOOP QUEUE\t\n")
		for _, l := range s.Loops {
			fmt.Fprintf(tw, "%d\t%d\t%s\t%s\t%s\t%d\t\n", l.Loop, l.Conns, human(l.AcceptsPerS, "/s"),
				human(l.Util, "ratio"), human(float64(l.QueuedBytes), "B"), l.QueueLen)
		}
		tw.Flush()
	}
	fmt.Fprintln(w)
	if len(s.TopQueues) == 0 {
		fmt.Fprintln(w, "QUEUES: none waiting")
	} else {
		tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintf(tw, "QUEUE\tKIND\tLEN\tDRAIN/s\tDRAINED IN\tALARM\n")
		qs := s.TopQueues
		if compact && len(qs) > topQueues {
			qs = qs[:topQueues]
		}
		for _, q := range qs {
			eta := "-"
			if q.ETAS >= 0 {
				eta = (time.Duration(q.ETAS * float64(time.Second))).Round(100 * time.Millisecond).String()
			}
			alarm := ""
			if q.Alarm {
				alarm = "ALARM"
			}
			fmt.Fprintf(tw, "%s\t%s\t%d\t%.1f\t%s\t%s\n", q.Name, q.Kind, q.Len, q.DrainPerS, eta, alarm)
		}
		tw.Flush()
	}
	for i, a := range s.Alarms {
		if compact && i == topQueues {
			fmt.Fprintf(w, "... and %d more alarms (edgectl stats lists them all)\n", len(s.Alarms)-i)
			break
		}
		fmt.Fprintf(w, "ALARM %s %s: %d >= %d since %s\n", a.Kind, a.Name, a.Len, a.Threshold, a.Since.UTC().Format(time.RFC3339))
	}
}

// human formats v in its unit: B and B/s in binary multiples, ratios as
// percentages, the rest as plain numbers.
func human(v float64, unit string) string {
	switch unit {
	case "B", "B/s":
		suf := strings.TrimPrefix(unit, "B")
		for _, u := range []string{"B", "KiB", "MiB", "GiB", "TiB"} {
			if math.Abs(v) < 1024 || u == "TiB" {
				if u == "B" {
					return fmt.Sprintf("%.0f%s%s", v, u, suf)
				}
				return fmt.Sprintf("%.1f%s%s", v, u, suf)
			}
			v /= 1024
		}
	case "ratio", "s/s":
		return fmt.Sprintf("%.1f%%", 100*v)
	case "s":
		return time.Duration(v * float64(time.Second)).Round(time.Microsecond).String()
	case "cores":
		return fmt.Sprintf("%.3f", v)
	}
	if v == math.Trunc(v) && math.Abs(v) < 1e15 {
		return fmt.Sprintf("%.0f", v)
	}
	return fmt.Sprintf("%.1f", v)
}

// decodeJSON decodes a response body into v.
func decodeJSON(resp *http.Response, v any) error {
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		return fmt.Errorf("decode %s: %w", resp.Request.URL, err)
	}
	return nil
}
