package obs

import (
	"math"
	"slices"
	"strings"
	"time"
)

// QueueInfo is one queue a source reports: per-connection outbound backlog
// (bytes), an inbox (messages), and so on. Kind selects the alarm threshold;
// Name tells queues of a kind apart (a user id, a connection handle). A
// source may leave out empty queues: a queue that is not reported counts as
// empty.
type QueueInfo struct {
	Kind string
	Name string
	Len  int64
}

// Queue kinds the reporter derives from netpoll.LoopStats itself.
const (
	KindLoopOut = "loop_out_bytes" // a loop's output not yet taken by the kernel
	KindLoopXQ  = "loop_xq"        // a loop's cross-loop message queue
)

// KindInbox is the queue kind of a user's inbox (messages waiting), which
// the server reports through Options.Queues.
const KindInbox = "inbox"

// DefaultThresholds are the alarm thresholds used for kinds the Options do
// not set. A kind with no threshold never alarms.
var DefaultThresholds = map[string]int64{
	KindLoopOut:     64 << 20,
	KindLoopXQ:      10000,
	KindConnBacklog: 1 << 20,
	KindInbox:       1000,
}

// QueueView is a queue in /stats' top list.
type QueueView struct {
	Kind      string  `json:"kind"`
	Name      string  `json:"name"`
	Len       int64   `json:"len"`
	DrainPerS float64 `json:"drain_per_s"` // decaying average of the shrink rate; negative: growing
	ETAS      float64 `json:"eta_s"`       // estimated seconds to drain; -1 if it is not draining
	Alarm     bool    `json:"alarm,omitempty"`
}

// Alarm is a queue over its threshold. It clears once the queue falls to
// half the threshold (or vanishes), so a queue hovering at the line does
// not flap.
type Alarm struct {
	Kind      string    `json:"kind"`
	Name      string    `json:"name"`
	Len       int64     `json:"len"`
	Threshold int64     `json:"threshold"`
	Since     time.Time `json:"since"`
}

type qkey struct{ kind, name string }

// qstate is what the reporter remembers about a queue between samples.
type qstate struct {
	len   int64
	drain float64 // decaying average (10 s) of -dLen/dt
	seen  int64   // sample number of the last report
}

// alarmEvent is a fired or cleared alarm, logged after the lock is dropped.
type alarmEvent struct {
	fired bool
	a     Alarm
	why   string
}

// drainWindow is the decay constant of the drain rate.
const drainWindow = 10 * time.Second

// trackQueues updates the queue states from this sample's reports, fires
// and clears alarms, and rebuilds the top list. Caller holds r.mu.
func (r *Reporter) trackQueues(qs []QueueInfo, now time.Time, dt time.Duration) []alarmEvent {
	a := 1 - math.Exp(-dt.Seconds()/drainWindow.Seconds())
	for _, q := range qs {
		if q.Len <= 0 {
			continue
		}
		k := qkey{q.Kind, q.Name}
		st, ok := r.queues[k]
		if !ok {
			st = &qstate{len: q.Len}
			r.queues[k] = st
		} else if st.seen == r.n { // the same queue twice in one sample: add up
			st.len += q.Len
			continue
		} else if dt > 0 {
			st.drain += a * (-float64(q.Len-st.len)/dt.Seconds() - st.drain)
			st.len = q.Len
		}
		st.seen = r.n
	}
	var evs []alarmEvent
	r.top = r.top[:0]
	for k, st := range r.queues {
		if st.seen != r.n { // not reported: empty now
			delete(r.queues, k)
			if al, ok := r.alarms[k]; ok {
				delete(r.alarms, k)
				al.Len = 0
				evs = append(evs, alarmEvent{a: *al, why: "drained"})
			}
			continue
		}
		th, hasTh := r.thresholds[k.kind]
		al, alarmed := r.alarms[k]
		switch {
		case alarmed && st.len <= th/2:
			delete(r.alarms, k)
			al.Len = st.len
			evs = append(evs, alarmEvent{a: *al, why: "drained"})
			alarmed = false
		case alarmed:
			al.Len = st.len
		case hasTh && th > 0 && st.len >= th:
			al = &Alarm{Kind: k.kind, Name: k.name, Len: st.len, Threshold: th, Since: now}
			r.alarms[k] = al
			r.fired++
			evs = append(evs, alarmEvent{fired: true, a: *al})
			alarmed = true
		}
		r.offerTop(QueueView{Kind: k.kind, Name: k.name, Len: st.len, DrainPerS: st.drain, ETAS: eta(st), Alarm: alarmed})
	}
	// Alarms whose queue is still reported but whose threshold was lowered
	// to 0 (disabled) clear too.
	for k, al := range r.alarms {
		if th := r.thresholds[k.kind]; th <= 0 {
			delete(r.alarms, k)
			evs = append(evs, alarmEvent{a: *al, why: "threshold disabled"})
		}
	}
	slices.SortFunc(r.top, cmpQueue)
	slices.SortFunc(evs, func(x, y alarmEvent) int { return cmpKey(x.a.Kind, x.a.Name, y.a.Kind, y.a.Name) })
	return evs
}

func eta(st *qstate) float64 {
	if st.drain <= 0 {
		return -1
	}
	return float64(st.len) / st.drain
}

// offerTop keeps r.top as the TopN longest queues (unsorted until the end).
func (r *Reporter) offerTop(v QueueView) {
	if len(r.top) < r.opt.TopN {
		r.top = append(r.top, v)
		return
	}
	// Replace the shortest if v is longer.
	mi := 0
	for i := range r.top {
		if cmpQueue(r.top[i], r.top[mi]) > 0 {
			mi = i
		}
	}
	if cmpQueue(v, r.top[mi]) < 0 {
		r.top[mi] = v
	}
}

// cmpQueue orders longest first, then by kind and name.
func cmpQueue(a, b QueueView) int {
	if a.Len != b.Len {
		if a.Len > b.Len {
			return -1
		}
		return 1
	}
	return cmpKey(a.Kind, a.Name, b.Kind, b.Name)
}

func cmpKey(ak, an, bk, bn string) int {
	if c := strings.Compare(ak, bk); c != 0 {
		return c
	}
	return strings.Compare(an, bn)
}
