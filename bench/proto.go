package bench

// The parent and its workers talk in JSON lines: the parent writes one Setup
// then Commands on the worker's stdin; the worker writes Ticks on stdout, the
// last one with Final set.

// Roles a worker gives its connections (see Setup.Mode).
const (
	modeIdle    = "idle"    // connections only (connect workload, capacity idle load)
	modePairs   = "pairs"   // conn 2i receives from conn 2i+1, i < Pairs
	modeFanout  = "fanout"  // worker 0 conn 0 publishes to one topic, every other conn subscribes
	modeOffline = "offline" // pairs with persistent sessions; receivers drop and come back
	modeChurn   = "churn"   // every conn connects, holds, disconnects, again
)

// Setup is a worker's fixed configuration.
type Setup struct {
	Worker         int      `json:"worker"`
	Target         string   `json:"target"` // host:port (IPv4)
	Src            []string `json:"src,omitempty"`
	Prefix         string   `json:"prefix"` // run id: unique client ids and topics
	Mode           string   `json:"mode"`
	Profile        string   `json:"profile"` // generic | inbox
	QoS            byte     `json:"qos"`
	Size           int      `json:"size"`
	KeepaliveS     int      `json:"keepalive_s"`
	ConnectTimeout int64    `json:"connect_timeout_ns"`
	Clean          bool     `json:"clean"`
	Pairs          int      `json:"pairs"`           // pairs/offline: pairs in this worker
	Group          string   `json:"group,omitempty"` // fanout: edged group (publish g/<group>/m<seq>; deliveries arrive in inboxes)
	Window         int      `json:"window"`          // closed loop: messages in flight per pair
	Touch          bool     `json:"touch"`           // idle conns subscribe their own topic (for Command.Touch)
	MaxPending     int      `json:"max_pending"`
	Username       string   `json:"username,omitempty"`
	Password       string   `json:"password,omitempty"`
	HoldNs         int64    `json:"hold_ns,omitempty"` // churn: time a connection stays up
	DownNs         int64    `json:"down_ns,omitempty"` // offline: time a receiver stays away
	UpNs           int64    `json:"up_ns,omitempty"`   // offline: time a receiver stays up
	TLS            bool     `json:"tls,omitempty"`     // dial over TLS (relay_linux.go)
	CAFile         string   `json:"cafile,omitempty"`
	TLSResume      bool     `json:"tls_resume,omitempty"`
	WS             string   `json:"ws,omitempty"` // WebSocket path: dial over WebSocket (relay_linux.go)
}

// Command changes what a worker does. Zero fields mean "unchanged" except as
// noted.
type Command struct {
	Op     string  `json:"op"`              // conns | rate | touch | drain | stop
	Conns  int     `json:"conns,omitempty"` // conns: target connection count
	Ramp   float64 `json:"ramp,omitempty"`  // conns: connects per second (0 = as fast as possible)
	Rate   float64 `json:"rate,omitempty"`  // rate: messages per second in this worker (0 with Closed=false stops)
	Closed bool    `json:"closed,omitempty"`
}

// Tick is a worker's report, four times a second. Counters are cumulative; the
// histograms cover the interval since the previous tick.
type Tick struct {
	Worker     int              `json:"worker"`
	Up         int              `json:"up"`         // connections with CONNACK
	Pending    int              `json:"pending"`    // connections being set up
	Attempts   int64            `json:"attempts"`   // connects started
	Connected  int64            `json:"connected"`  // CONNACKs (0x00) received
	Sent       int64            `json:"sent"`       // PUBLISH written
	Acked      int64            `json:"acked"`      // PUBACKs for our publishes
	Received   int64            `json:"received"`   // measured messages received
	Dups       int64            `json:"dups"`       // offline: duplicates
	Reordered  int64            `json:"reordered"`  // pairs, offline: arrived after a later message of the same pair
	Touched    int64            `json:"touched"`    // conns that carried their touch message
	Subscribed int64            `json:"subscribed"` // SUBACKs granting a subscription
	Missing    int64            `json:"missing"`    // offline: acked messages not yet received
	Errors     map[string]int64 `json:"errors,omitempty"`
	Lat        []int64          `json:"lat,omitempty"`  // end-to-end latency: (microseconds, count) pairs of HDR buckets
	Conn       []int64          `json:"conn,omitempty"` // connect latency, the same way
	Final      bool             `json:"final,omitempty"`
	Lost       int64            `json:"lost,omitempty"`    // final, offline: acked, never received
	Unacked    int64            `json:"unacked,omitempty"` // final, offline: sent, never acked
	FatalError string           `json:"fatal,omitempty"`
}
