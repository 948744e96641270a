package capture

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net"
	"sort"
	"sync"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
	"github.com/edgedhq/edged/edge/mqtt"
)

// maxOpen caps the connections Replay holds at once: the per-process file
// limit is 20,000. A session that would exceed it waits, and its lateness
// shows in the timing figures.
const maxOpen = 15000

// ReplayOptions configures Replay.
type ReplayOptions struct {
	Target string  // host:port of the server
	Speed  float64 // 2 replays twice as fast as recorded (default 1)
	Scale  int     // copies of every session, each with its own identities (default 1)
	// Secret, if set, is the target's token secret: every CONNECT carries
	// username = client id = mapped user id and a token minted with it.
	// Without it CONNECTs carry no password (anonymous login).
	Secret       []byte
	KeepPayloads bool          // send recorded payloads instead of random bytes
	DialTimeout  time.Duration // TCP connect limit (default 10 s)
	// Drain is how long a session that sent DISCONNECT waits for the server
	// to close the connection (default 2 s).
	Drain    time.Duration
	TokenTTL time.Duration // token lifetime (default 24 h)
	// Seed seeds the random payloads (0: a random seed).
	Seed uint64
}

// Count is a number of packets and their bytes on the wire.
type Count struct {
	Packets int64 `json:"packets"`
	Bytes   int64 `json:"bytes"`
}

// Timing summarises how late packets went out against the recorded schedule
// (scaled by the speed), in microseconds.
type Timing struct {
	Count  int64   `json:"count"`
	MeanUs float64 `json:"mean_us"`
	P50us  int64   `json:"p50_us"`
	P99us  int64   `json:"p99_us"`
	MaxUs  int64   `json:"max_us"`
}

// SessionResult is the outcome of one replayed session copy. The recorded
// client id is never reported, only its replacement.
type SessionResult struct {
	Session      int    `json:"session"` // index in Workload.Sessions
	Copy         int    `json:"copy"`
	ID           string `json:"id"`
	Connected    bool   `json:"connected"`     // CONNACK 0 received
	ConnackCode  int    `json:"connack_code"`  // -1: no CONNACK
	Sent         int64  `json:"sent"`          // MQTT packets sent
	Received     int64  `json:"received"`      // MQTT packets received
	Messages     int64  `json:"messages"`      // PUBLISH received
	MessageBytes int64  `json:"message_bytes"` // their payload bytes
	// The same two figures in the recording.
	RecordedMessages     int64  `json:"recorded_messages"`
	RecordedMessageBytes int64  `json:"recorded_message_bytes"`
	Error                string `json:"error,omitempty"`
}

// Report is what Replay did. Sent and Received are keyed by MQTT packet type
// (CONNECT, PUBLISH, ...); Recorded* are the capture's figures times Scale.
// The replay acknowledges the server's PUBLISH/PUBREC/PUBREL itself, so the
// recorded client acknowledgements are not replayed but re-created.
type Report struct {
	Capture          string           `json:"capture,omitempty"`
	Target           string           `json:"target"`
	Speed            float64          `json:"speed"`
	Scale            int              `json:"scale"`
	Sessions         int              `json:"sessions"`
	Connected        int              `json:"connected"`
	Refused          int              `json:"refused"`
	Failed           int              `json:"failed"`
	Skipped          int              `json:"skipped"` // connections in the capture that could not be replayed
	RecordedSeconds  float64          `json:"recorded_seconds"`
	ScheduledSeconds float64          `json:"scheduled_seconds"`
	ElapsedSeconds   float64          `json:"elapsed_seconds"`
	RecordedSent     map[string]Count `json:"recorded_sent"`
	RecordedReceived map[string]Count `json:"recorded_received"`
	Sent             map[string]Count `json:"sent"`
	Received         map[string]Count `json:"received"`
	MessagesRecorded int64            `json:"messages_recorded"`
	MessagesReceived int64            `json:"messages_received"`
	Timing           Timing           `json:"timing"`
	Errors           map[string]int   `json:"errors,omitempty"`
	PerSession       []SessionResult  `json:"per_session"`
}

// OK reports whether every session connected and none failed.
func (r *Report) OK() bool { return r.Failed == 0 && r.Refused == 0 && r.Connected == r.Sessions }

func (o *ReplayOptions) setDefaults() error {
	if o.Speed == 0 {
		o.Speed = 1
	}
	if o.Scale == 0 {
		o.Scale = 1
	}
	if o.DialTimeout == 0 {
		o.DialTimeout = 10 * time.Second
	}
	if o.Drain == 0 {
		o.Drain = 2 * time.Second
	}
	if o.TokenTTL == 0 {
		o.TokenTTL = 24 * time.Hour
	}
	switch {
	case o.Target == "":
		return fmt.Errorf("replay: no target: %w", ErrBadOptions)
	case math.IsNaN(o.Speed) || math.IsInf(o.Speed, 0) || o.Speed < 0.01 || o.Speed > 1000:
		return fmt.Errorf("replay: speed %v outside [0.01, 1000]: %w", o.Speed, ErrBadOptions)
	case o.Scale < 1 || o.Scale > 100000:
		return fmt.Errorf("replay: scale %d outside [1, 100000]: %w", o.Scale, ErrBadOptions)
	case o.DialTimeout < 0 || o.Drain < 0 || o.TokenTTL < 0:
		return fmt.Errorf("replay: negative timeout: %w", ErrBadOptions)
	}
	if _, _, err := net.SplitHostPort(o.Target); err != nil {
		return fmt.Errorf("replay: target %q: %w: %v", o.Target, ErrBadOptions, err)
	}
	return nil
}

// replayer is one Replay run; mu guards the fields below it.
type replayer struct {
	o     ReplayOptions
	w     *Workload
	ids   *identities
	t0    time.Time
	slots chan struct{} // maxOpen connection slots

	mu       sync.Mutex
	sent     map[string]Count
	received map[string]Count
	errs     map[string]int
	lateness *hdrhistogram.Histogram
}

// Replay re-enacts every session of w, Scale times, against o.Target on the
// recorded schedule divided by Speed, and waits until all are done or ctx
// ends. Per session copy: dial at the SYN's time, send each recorded client
// packet at its time (CONNECT, SUBSCRIBE, UNSUBSCRIBE and PUBLISH rewritten
// for the mapped identities, PUBLISH payloads randomised unless
// KeepPayloads; recorded acknowledgements are replaced by live ones), read
// and acknowledge what the server sends, and close when the recorded client
// closed (or, after DISCONNECT, when the server does). Connection failures
// are counted in the Report, not returned. Errors: ErrBadOptions, ErrNoSessions.
func Replay(ctx context.Context, w *Workload, o ReplayOptions) (*Report, error) {
	if err := o.setDefaults(); err != nil {
		return nil, err
	}
	if w == nil || len(w.Sessions) == 0 {
		return nil, fmt.Errorf("replay: %w", ErrNoSessions)
	}
	if o.Seed == 0 {
		o.Seed = rand.Uint64()
	}
	r := &replayer{
		o: o, w: w, ids: newIdentities(),
		slots:    make(chan struct{}, maxOpen),
		sent:     map[string]Count{},
		received: map[string]Count{},
		errs:     map[string]int{},
		lateness: hdrhistogram.New(1, int64(time.Hour/time.Microsecond), 3),
	}
	// Identities in a fixed order: client ids first, then the users topics name.
	for i, s := range w.Sessions {
		r.ids.add(sessionKey(i, s))
	}
	var p mqtt.Packet
	for _, s := range w.Sessions {
		for _, st := range s.Sent {
			if _, err := mqtt.Decode(st.Raw, maxMQTTPacket, &p); err != nil {
				continue // Load decoded it; cannot happen
			}
			switch p.Type {
			case mqtt.TypePublish:
				r.ids.scanTopic(string(p.Topic))
			case mqtt.TypeSubscribe, mqtt.TypeUnsubscribe:
				for f := range p.Filters() {
					r.ids.scanTopic(string(f))
				}
			}
		}
	}
	rep := &Report{
		Target: o.Target, Speed: o.Speed, Scale: o.Scale,
		Sessions:         len(w.Sessions) * o.Scale,
		Skipped:          w.Skipped,
		RecordedSeconds:  w.Duration.Seconds(),
		ScheduledSeconds: w.Duration.Seconds() / o.Speed,
		RecordedSent:     map[string]Count{},
		RecordedReceived: map[string]Count{},
		PerSession:       make([]SessionResult, len(w.Sessions)*o.Scale),
	}
	for _, s := range w.Sessions {
		for _, st := range s.Sent {
			addCount(rep.RecordedSent, st.Type, st.Size, int64(o.Scale))
		}
		for _, st := range s.Recv {
			addCount(rep.RecordedReceived, st.Type, st.Size, int64(o.Scale))
			if st.Type == mqtt.TypePublish {
				rep.MessagesRecorded += int64(o.Scale)
			}
		}
	}
	// Start after a short lead so that the first sessions are not late
	// because goroutines are still being created.
	r.t0 = time.Now().Add(50*time.Millisecond + time.Duration(len(rep.PerSession))*time.Microsecond)
	var wg sync.WaitGroup
	for k := 0; k < o.Scale; k++ {
		for i, s := range w.Sessions {
			res := &rep.PerSession[k*len(w.Sessions)+i]
			wg.Add(1)
			go func() {
				defer wg.Done()
				r.session(ctx, i, k, s, res)
			}()
		}
	}
	wg.Wait()
	rep.ElapsedSeconds = time.Since(r.t0).Seconds()
	rep.Sent, rep.Received = r.sent, r.received
	if len(r.errs) > 0 {
		rep.Errors = r.errs
	}
	for _, res := range rep.PerSession {
		switch {
		case res.Connected:
			rep.Connected++
		case res.ConnackCode > 0:
			rep.Refused++
		default:
			rep.Failed++
		}
		rep.MessagesReceived += res.Messages
	}
	h := r.lateness
	rep.Timing = Timing{Count: h.TotalCount(), MeanUs: h.Mean(), P50us: h.ValueAtQuantile(50), P99us: h.ValueAtQuantile(99), MaxUs: h.Max()}
	return rep, nil
}

// sessionKey is the identity key of session i: its client id, or a key of
// its own for a CONNECT without one (the server would assign it).
func sessionKey(i int, s *Session) string {
	if s.ClientID == "" {
		return fmt.Sprintf("\x00session%d", i)
	}
	return s.ClientID
}

func addCount(m map[string]Count, t mqtt.Type, size int, times int64) {
	c := m[t.String()]
	c.Packets += times
	c.Bytes += int64(size) * times
	m[t.String()] = c
}

// at is the replay time of recorded offset d.
func (r *replayer) at(d time.Duration) time.Time {
	return r.t0.Add(time.Duration(float64(d) / r.o.Speed))
}

func sleepUntil(ctx context.Context, t time.Time) error {
	d := time.Until(t)
	if d <= 0 {
		return ctx.Err()
	}
	tm := time.NewTimer(d)
	defer tm.Stop()
	select {
	case <-tm.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// fail records a session's error; the schedule and the reader may both call it.
func (r *replayer) fail(res *SessionResult, what string, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if res.Error == "" {
		res.Error = fmt.Sprintf("%s: %v", what, err)
	}
	r.errs[what]++
}

// conn is one replayed connection; wmu serialises the schedule's writes and
// the reader's acknowledgements.
type conn struct {
	nc   net.Conn
	wmu  sync.Mutex
	sent map[string]Count // guarded by wmu
}

func (c *conn) write(b []byte, t mqtt.Type) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.nc.SetWriteDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.nc.Write(b); err != nil {
		return err
	}
	addCount(c.sent, t, len(b), 1)
	return nil
}

func (r *replayer) session(ctx context.Context, i, k int, s *Session, res *SessionResult) {
	key := sessionKey(i, s)
	id := r.ids.mapped(key, k)
	if s.ClientID == "" {
		id = replayID(k, r.ids.index[key], 12)
	}
	*res = SessionResult{Session: i, Copy: k, ID: id, ConnackCode: -1}
	for _, st := range s.Recv {
		if st.Type == mqtt.TypePublish {
			res.RecordedMessages++
			res.RecordedMessageBytes += int64(st.PayloadLen)
		}
	}
	if sleepUntil(ctx, r.at(s.Open)) != nil {
		r.fail(res, "cancelled", ctx.Err())
		return
	}
	select {
	case r.slots <- struct{}{}:
	case <-ctx.Done():
		r.fail(res, "cancelled", ctx.Err())
		return
	}
	defer func() { <-r.slots }()
	d := net.Dialer{Timeout: r.o.DialTimeout}
	nc, err := d.DialContext(ctx, "tcp", r.o.Target)
	if err != nil {
		r.fail(res, "dial", err)
		return
	}
	c := &conn{nc: nc, sent: map[string]Count{}}
	readDone := make(chan struct{})
	recv := map[string]Count{}
	go func() {
		defer close(readDone)
		r.read(c, res, recv)
	}()
	rng := rand.New(rand.NewChaCha8(seed(r.o.Seed, i, k)))
	var p mqtt.Packet
	var buf []byte
	sentDisconnect, broken := false, false
	for _, st := range s.Sent {
		if _, err := mqtt.Decode(st.Raw, maxMQTTPacket, &p); err != nil {
			continue
		}
		buf, err = r.rewrite(buf[:0], &p, st.Raw, k, id, rng)
		if err != nil {
			r.fail(res, "encode", err)
			broken = true
			break
		}
		if buf == nil {
			continue // an acknowledgement: the reader sends it live
		}
		when := r.at(st.At)
		if sleepUntil(ctx, when) != nil {
			r.fail(res, "cancelled", ctx.Err())
			broken = true
			break
		}
		late := time.Since(when)
		if err := c.write(buf, p.Type); err != nil {
			r.fail(res, "write", err)
			broken = true
			break
		}
		r.mu.Lock()
		r.lateness.RecordValue(max(late.Microseconds(), 0))
		r.mu.Unlock()
		sentDisconnect = p.Type == mqtt.TypeDisconnect
	}
	switch {
	case broken:
		nc.SetReadDeadline(time.Now())
	case sentDisconnect:
		// The server closes after DISCONNECT; give it Drain to do so.
		nc.SetReadDeadline(time.Now().Add(r.o.Drain))
	default:
		if err := sleepUntil(ctx, r.at(s.End)); err != nil {
			r.fail(res, "cancelled", err)
		}
		nc.SetReadDeadline(time.Now())
	}
	<-readDone
	nc.Close()
	r.mu.Lock()
	for t, n := range c.sent {
		res.Sent += n.Packets
		m := r.sent[t]
		m.Packets += n.Packets
		m.Bytes += n.Bytes
		r.sent[t] = m
	}
	for t, n := range recv {
		m := r.received[t]
		m.Packets += n.Packets
		m.Bytes += n.Bytes
		r.received[t] = m
	}
	r.mu.Unlock()
}

func seed(s uint64, i, k int) (out [32]byte) {
	for j, v := range []uint64{s, uint64(i), uint64(k), 0x6361707475726521} {
		for b := 0; b < 8; b++ {
			out[j*8+b] = byte(v >> (8 * b))
		}
	}
	return out
}

// rewrite appends the replay form of recorded client packet p (raw) to dst.
// It returns nil for acknowledgements, which the reader sends live.
func (r *replayer) rewrite(dst []byte, p *mqtt.Packet, raw []byte, k int, id string, rng *rand.Rand) ([]byte, error) {
	switch p.Type {
	case mqtt.TypePuback, mqtt.TypePubrec, mqtt.TypePubrel, mqtt.TypePubcomp:
		return nil, nil
	case mqtt.TypeConnect:
		c := p.Connect
		nc := mqtt.Connect{
			ProtocolName: c.ProtocolName, ProtocolLevel: c.ProtocolLevel,
			CleanSession: c.CleanSession, KeepAlive: c.KeepAlive,
			ClientID: []byte(id),
			WillFlag: c.WillFlag, WillQoS: c.WillQoS, WillRetain: c.WillRetain,
		}
		if r.o.Speed < 1 && c.KeepAlive > 0 {
			// Pings come 1/speed times further apart: stretch the keepalive.
			nc.KeepAlive = uint16(min(math.Ceil(float64(c.KeepAlive)/r.o.Speed), 65535))
		}
		if c.WillFlag {
			nc.WillTopic = []byte(r.ids.topic(string(c.WillTopic), k, r.o.Scale > 1))
			nc.WillMessage = r.payload(c.WillMessage, rng)
		}
		if len(r.o.Secret) > 0 {
			nc.UsernameFlag, nc.Username = true, []byte(id)
			nc.PasswordFlag = true
			nc.Password = []byte(MintToken(r.o.Secret, id, time.Now().Add(r.o.TokenTTL)))
		} else if c.UsernameFlag {
			nc.UsernameFlag, nc.Username = true, []byte(id)
		}
		return mqtt.AppendConnect(dst, &nc), nil
	case mqtt.TypePublish:
		topic := r.ids.topic(string(p.Topic), k, r.o.Scale > 1)
		return mqtt.AppendPublish(dst, topic, r.payload(p.Payload, rng), p.QoS, p.Retain, p.Dup, p.PacketID), nil
	case mqtt.TypeSubscribe:
		var subs []mqtt.Subscription
		for f, q := range p.Filters() {
			subs = append(subs, mqtt.Subscription{Filter: r.ids.topic(string(f), k, r.o.Scale > 1), QoS: q})
		}
		return mqtt.AppendSubscribe(dst, p.PacketID, subs...), nil
	case mqtt.TypeUnsubscribe:
		var fs []string
		for f := range p.Filters() {
			fs = append(fs, r.ids.topic(string(f), k, r.o.Scale > 1))
		}
		return mqtt.AppendUnsubscribe(dst, p.PacketID, fs...), nil
	}
	return append(dst, raw...), nil // PINGREQ, DISCONNECT, anything else as recorded
}

// payload returns the recorded payload or random bytes of its size.
func (r *replayer) payload(b []byte, rng *rand.Rand) []byte {
	if r.o.KeepPayloads || len(b) == 0 {
		return b
	}
	out := make([]byte, len(b))
	for i := 0; i < len(out); i += 8 {
		v := rng.Uint64()
		for j := 0; j < 8 && i+j < len(out); j++ {
			out[i+j] = byte(v >> (8 * j))
		}
	}
	return out
}

// read decodes what the server sends until the connection ends, counting
// it and acknowledging QoS 1 and 2 flows as a client does.
func (r *replayer) read(c *conn, res *SessionResult, recv map[string]Count) {
	var (
		p    mqtt.Packet
		data = make([]byte, 0, 64<<10) // undecoded bytes are data[off:]
		off  int
		ack  []byte
	)
	for {
		if cap(data)-len(data) < 4096 {
			data = append(data[:0], data[off:]...) // memmove: overlap is fine
			off = 0
			if cap(data)-len(data) < 4096 {
				data = append(make([]byte, 0, 2*cap(data)), data...)
			}
		}
		n, err := c.nc.Read(data[len(data):cap(data)])
		data = data[:len(data)+n]
		for off < len(data) {
			k, derr := mqtt.Decode(data[off:], maxMQTTPacket, &p)
			if derr != nil {
				r.fail(res, "decode server packet", derr)
				return
			}
			if k == 0 {
				break
			}
			addCount(recv, p.Type, k, 1)
			res.Received++
			ack = ack[:0]
			var at mqtt.Type
			switch p.Type {
			case mqtt.TypeConnack:
				res.ConnackCode = int(p.ReturnCode)
				res.Connected = p.ReturnCode == mqtt.ConnAccepted
			case mqtt.TypePublish:
				res.Messages++
				res.MessageBytes += int64(len(p.Payload))
				switch p.QoS {
				case 1:
					ack, at = mqtt.AppendPuback(ack, p.PacketID), mqtt.TypePuback
				case 2:
					ack, at = mqtt.AppendPubrec(ack, p.PacketID), mqtt.TypePubrec
				}
			case mqtt.TypePubrec:
				ack, at = mqtt.AppendPubrel(ack, p.PacketID), mqtt.TypePubrel
			case mqtt.TypePubrel:
				ack, at = mqtt.AppendPubcomp(ack, p.PacketID), mqtt.TypePubcomp
			}
			if len(ack) > 0 {
				if werr := c.write(ack, at); werr != nil {
					r.fail(res, "write", werr)
					return
				}
			}
			off += k
		}
		if off == len(data) {
			data, off = data[:0], 0
		}
		if err != nil {
			var ne net.Error
			switch {
			case errors.Is(err, io.EOF), errors.As(err, &ne) && ne.Timeout(), errors.Is(err, net.ErrClosed):
			default:
				r.fail(res, "read", err)
			}
			return
		}
	}
}

// sortedTypes returns the keys of m in MQTT type order.
func sortedTypes(ms ...map[string]Count) []string {
	order := map[string]int{}
	for t := mqtt.TypeConnect; t <= mqtt.TypeDisconnect; t++ {
		order[t.String()] = int(t)
	}
	seen := map[string]bool{}
	var out []string
	for _, m := range ms {
		for k := range m {
			if !seen[k] {
				seen[k] = true
				out = append(out, k)
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return order[out[i]] < order[out[j]] })
	return out
}
