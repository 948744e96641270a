package capture

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"time"

	"github.com/edgedhq/edged/edge/mqtt"
	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"github.com/google/gopacket/pcapgo"
	"github.com/google/gopacket/reassembly"
)

// maxMQTTPacket caps one decoded MQTT packet: edged's largest configurable
// packet size (64 MiB); the MQTT limit (256 MiB) would let a corrupt length
// field pin that much memory.
const maxMQTTPacket = 64 << 20

// maxSnaplen caps the snap length Load accepts from a file header, so a
// corrupt capture length cannot make it allocate gigabytes.
const maxSnaplen = 16 << 20

// Workload is the replayable content of a capture: one Session per TCP
// connection to the server port that began inside the capture.
type Workload struct {
	Port     int           // server port the sessions were recognised by
	Start    time.Time     // capture time of the first session's first packet
	Duration time.Duration // from Start to the last packet of any session
	Packets  int           // packets read from the file
	Sessions []*Session    // ordered by Open
	// Skipped counts connections with data that cannot be replayed: begun
	// before the capture (their first client packet is not CONNECT).
	Skipped int
}

// Session is one recorded MQTT connection. Times are offsets from
// Workload.Start.
type Session struct {
	Client   string        // client address in the capture, host:port
	Open     time.Duration // SYN (or the first packet)
	End      time.Duration // client FIN/RST, else the last packet seen
	ClientID string        // the CONNECT's client identifier
	Username string        // the CONNECT's user name, if any
	Sent     []Step        // client to server, in order
	Recv     []Step        // server to client, in order
	// Partial: the capture ended inside an MQTT packet of this session.
	Partial bool
}

// Step is one recorded MQTT packet.
type Step struct {
	At         time.Duration // when its last byte reached the capture point
	PacketNum  int           // pcap packet number of that byte (1-based)
	Type       mqtt.Type
	Size       int    // bytes on the wire
	PayloadLen int    // PUBLISH payload bytes
	Raw        []byte // the encoded packet (Sent only)
}

// Load reads the pcap or pcapng file at path; see Read.
func Load(path string, port int) (*Workload, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open capture: %w", err)
	}
	defer f.Close()
	return Read(f, port)
}

// packetReader is what pcapgo's Reader and NgReader have in common.
type packetReader interface {
	ReadPacketData() ([]byte, gopacket.CaptureInfo, error)
}

// Read decodes a capture (pcap with micro- or nanosecond timestamps, either
// byte order, or pcapng) holding MQTT 3.1.1 over TCP to port: it reassembles
// each connection and decodes its MQTT packets. Segments of other ports and
// packets that are not TCP are ignored. Errors: ErrBadCapture, naming the
// packet (a truncated file, a malformed frame, IP or TCP header, a packet cut
// by the snap length, bytes missing from a stream, a malformed MQTT packet),
// ErrLinkType, ErrNoSessions, ErrBadOptions (port).
func Read(r io.Reader, port int) (*Workload, error) {
	if port < 1 || port > 65535 {
		return nil, fmt.Errorf("read capture: port %d outside 1-65535: %w", port, ErrBadOptions)
	}
	br := bufio.NewReaderSize(r, 1<<16)
	magic, err := br.Peek(4)
	if err != nil {
		if errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("read capture header: file has %d bytes: %w", len(magic), ErrBadCapture)
		}
		return nil, fmt.Errorf("read capture header: %w", err)
	}
	var (
		src      packetReader
		linkType func(ci gopacket.CaptureInfo) (uint32, error)
	)
	switch binary.LittleEndian.Uint32(magic) {
	case 0x0a0d0d0a: // pcapng section header block
		ng, err := guarded(func() (*pcapgo.NgReader, error) {
			return pcapgo.NewNgReader(newNgGuard(br), pcapgo.DefaultNgReaderOptions)
		})
		if err != nil {
			return nil, fmt.Errorf("read pcapng header: %w: %v", ErrBadCapture, err)
		}
		src = safeReader{ng}
		linkType = func(ci gopacket.CaptureInfo) (uint32, error) {
			ifc, err := ng.Interface(ci.InterfaceIndex)
			if err != nil {
				return 0, fmt.Errorf("%w: %v", ErrBadCapture, err)
			}
			if ifc.LinkType == linkTypeSLL2Truncated {
				return linkTypeLinuxSLL2, nil
			}
			return uint32(ifc.LinkType), nil
		}
	case 0xa1b2c3d4, 0xd4c3b2a1, 0xa1b23c4d, 0x4d3cb2a1:
		// pcapgo's LinkType is 8 bits wide: take the header's 32 bits (the
		// top 4 hold FCS information, pcap-savefile(5)).
		var rawLinkType uint32
		if hdr, _ := br.Peek(24); len(hdr) == 24 {
			order := binary.ByteOrder(binary.LittleEndian)
			if m := binary.LittleEndian.Uint32(hdr); m == 0xd4c3b2a1 || m == 0x4d3cb2a1 {
				order = binary.BigEndian
			}
			rawLinkType = order.Uint32(hdr[20:]) & 0x0fffffff
		}
		pr, err := pcapgo.NewReader(br)
		if err != nil {
			return nil, fmt.Errorf("read pcap header: %w: %v", ErrBadCapture, err)
		}
		// tcpdump and Wireshark ignore the snap length when reading; pcapgo
		// refuses packets longer than it and allocates what a packet header
		// claims up to it. Accept maxSnaplen, whatever the header says.
		pr.SetSnaplen(maxSnaplen)
		src = pr
		lt := rawLinkType
		linkType = func(gopacket.CaptureInfo) (uint32, error) { return lt, nil }
	default:
		return nil, fmt.Errorf("read capture header: magic %#08x is neither pcap nor pcapng: %w",
			binary.BigEndian.Uint32(magic), ErrBadCapture)
	}

	ld := &loader{port: uint16(port)}
	asm := reassembly.NewAssembler(reassembly.NewStreamPool(ld))
	for num := 1; ; num++ {
		data, ci, err := src.ReadPacketData()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			if errors.Is(err, io.ErrUnexpectedEOF) {
				return nil, fmt.Errorf("read packet %d: file truncated: %w", num, ErrBadCapture)
			}
			return nil, fmt.Errorf("read packet %d: %w: %v", num, ErrBadCapture, err)
		}
		ld.packets = num
		lt, err := linkType(ci)
		if err != nil {
			return nil, fmt.Errorf("read packet %d: %w", num, err)
		}
		if err := ld.packet(asm, num, lt, data, ci); err != nil {
			return nil, err
		}
	}
	asm.FlushAll()
	if ld.err != nil {
		return nil, ld.err
	}
	return ld.workload()
}

// guarded runs a gopacket file parser call, turning its panics into errors:
// pcapgo v1.1.19's pcapng reader indexes option values without checking
// their length and divides by a timestamp resolution that can overflow to 0
// (found by FuzzRead).
func guarded[T any](f func() (T, error)) (v T, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("parser failed: %v", p)
		}
	}()
	return f()
}

// safeReader is a packetReader whose panics become errors (see guarded).
type safeReader struct{ r packetReader }

func (s safeReader) ReadPacketData() (data []byte, ci gopacket.CaptureInfo, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("parser failed: %v", p)
		}
	}()
	return s.r.ReadPacketData()
}

// loader turns packets into sessions; it is the reassembly.StreamFactory.
type loader struct {
	port    uint16
	packets int
	streams []*stream
	err     error     // first error found by a stream
	first   time.Time // earliest packet
}

// asmContext carries the packet number through the assembler.
type asmContext struct {
	ci  gopacket.CaptureInfo
	num int
}

func (c *asmContext) GetCaptureInfo() gopacket.CaptureInfo { return c.ci }

func packetNum(ac reassembly.AssemblerContext) int {
	if c, ok := ac.(*asmContext); ok && c != nil {
		return c.num
	}
	return 0
}

// packet decodes one captured frame and feeds its TCP segment to asm.
func (ld *loader) packet(asm *reassembly.Assembler, num int, link uint32, data []byte, ci gopacket.CaptureInfo) error {
	opts := gopacket.DecodeOptions{NoCopy: true}
	var pkt gopacket.Packet
	lt := layers.LinkType(link)
	switch {
	case !knownLinkType(link):
		return fmt.Errorf("read packet %d: link type %d: %w", num, link, ErrLinkType)
	case link == linkTypeLinuxSLL2:
		// tcpdump -i any writes Linux cooked v2, which gopacket v1.1.19
		// does not know: a 20-byte header whose first field is the
		// EtherType (pcap-linktype(7)).
		if len(data) < sll2HeaderLen {
			return fmt.Errorf("read packet %d: malformed Linux cooked v2 frame (%d bytes): %w", num, len(data), ErrBadCapture)
		}
		switch binary.BigEndian.Uint16(data) {
		case uint16(layers.EthernetTypeIPv4):
			pkt = gopacket.NewPacket(data[sll2HeaderLen:], layers.LayerTypeIPv4, opts)
		case uint16(layers.EthernetTypeIPv6):
			pkt = gopacket.NewPacket(data[sll2HeaderLen:], layers.LayerTypeIPv6, opts)
		default:
			return nil // not IP
		}
	default:
		pkt = gopacket.NewPacket(data, lt, opts)
	}
	tcp, _ := pkt.Layer(layers.LayerTypeTCP).(*layers.TCP)
	if tcp == nil {
		if len(pkt.Layers()) == 0 || pkt.Layers()[0].LayerType() == gopacket.LayerTypeDecodeFailure {
			name := lt.String()
			if link == linkTypeLinuxSLL2 {
				name = "LINUX_SLL2"
			}
			return fmt.Errorf("read packet %d: malformed %s frame: %w", num, name, ErrBadCapture)
		}
		if e := pkt.ErrorLayer(); e != nil && carriesTCP(pkt) {
			return fmt.Errorf("read packet %d: malformed IP or TCP header (%v): %w", num, e.Error(), ErrBadCapture)
		}
		return nil // not TCP: ARP, UDP, ...
	}
	if tcp.SrcPort != layers.TCPPort(ld.port) && tcp.DstPort != layers.TCPPort(ld.port) {
		return nil
	}
	if ci.CaptureLength < ci.Length || pkt.Metadata().Truncated {
		return fmt.Errorf("read packet %d: captured %d of %d bytes (snap length too small or packet cut): %w",
			num, ci.CaptureLength, ci.Length, ErrBadCapture)
	}
	if ld.first.IsZero() || ci.Timestamp.Before(ld.first) {
		ld.first = ci.Timestamp
	}
	asm.AssembleWithContext(pkt.NetworkLayer().NetworkFlow(), tcp, &asmContext{ci: ci, num: num})
	return ld.err
}

// linkTypeLinuxSLL2 is LINKTYPE_LINUX_SLL2, tcpdump's "any" device.
// gopacket v1.1.19 keeps link types in 8 bits, so its pcapng reader reports
// it as 20 (276 & 0xff), a value no link type uses.
const (
	linkTypeLinuxSLL2     = 276
	linkTypeSLL2Truncated = layers.LinkType(linkTypeLinuxSLL2 & 0xff)
	sll2HeaderLen         = 20
)

// knownLinkType reports whether Load decodes link type lt.
func knownLinkType(lt uint32) bool {
	switch lt {
	case linkTypeLinuxSLL2, uint32(layers.LinkTypeEthernet), uint32(layers.LinkTypeLinuxSLL), uint32(layers.LinkTypeRaw),
		uint32(layers.LinkTypeIPv4), uint32(layers.LinkTypeIPv6), uint32(layers.LinkTypeNull), uint32(layers.LinkTypeLoop):
		return true
	}
	return false
}

// carriesTCP reports whether the last layer decoded announces TCP or IP next,
// so that the decode failure is in an IP or TCP header.
func carriesTCP(pkt gopacket.Packet) bool {
	ls := pkt.Layers()
	for i := len(ls) - 1; i >= 0; i-- {
		switch l := ls[i].(type) {
		case *layers.IPv4:
			return l.Protocol == layers.IPProtocolTCP
		case *layers.IPv6:
			return l.NextHeader == layers.IPProtocolTCP
		case *layers.Ethernet:
			return l.EthernetType == layers.EthernetTypeIPv4 || l.EthernetType == layers.EthernetTypeIPv6
		case *layers.LinuxSLL:
			return l.EthernetType == layers.EthernetTypeIPv4 || l.EthernetType == layers.EthernetTypeIPv6
		case *layers.Loopback:
			return true
		}
	}
	return false
}

func (ld *loader) fail(err error) {
	if ld.err == nil {
		ld.err = err
	}
}

// New implements reassembly.StreamFactory.
func (ld *loader) New(netFlow, tcpFlow gopacket.Flow, tcp *layers.TCP, ac reassembly.AssemblerContext) reassembly.Stream {
	s := &stream{ld: ld, sess: &Session{}}
	// The factory sees the connection's first packet; its direction is
	// reassembly's TCPDirClientToServer. Ours is decided by the port.
	if tcp.DstPort == layers.TCPPort(ld.port) {
		s.toServer = reassembly.TCPDirClientToServer
		s.sess.Client = addr(netFlow.Src(), tcpFlow.Src())
	} else {
		s.toServer = reassembly.TCPDirServerToClient
		s.sess.Client = addr(netFlow.Dst(), tcpFlow.Dst())
	}
	ld.streams = append(ld.streams, s)
	return s
}

func addr(host, port gopacket.Endpoint) string {
	if host.EndpointType() == layers.EndpointIPv6 {
		return "[" + host.String() + "]:" + port.String()
	}
	return host.String() + ":" + port.String()
}

// stream is one TCP connection being reassembled.
type stream struct {
	ld       *loader
	sess     *Session
	toServer reassembly.TCPFlowDirection
	open     time.Time // SYN or first packet
	end      time.Time // client FIN/RST
	last     time.Time // last packet
	started  bool
	buf      [2][]byte // undecoded bytes: [0] client to server, [1] back
	gapAt    [2]int    // first packet that arrived after missing bytes, per side
	sent     []timedStep
	recv     []timedStep
	p        mqtt.Packet
}

// timedStep is a Step with an absolute time, before Start is known.
type timedStep struct {
	Step
	t time.Time
}

// Accept implements reassembly.Stream: it notes the connection's times and
// forces reassembly to start on a connection captured without its SYN.
func (s *stream) Accept(tcp *layers.TCP, ci gopacket.CaptureInfo, dir reassembly.TCPFlowDirection, nextSeq reassembly.Sequence, start *bool, ac reassembly.AssemblerContext) bool {
	if !s.started {
		s.started = true
		s.open = ci.Timestamp
	}
	if nextSeq == -1 && !tcp.SYN { // reassembly's invalidSequence: this half has not started
		*start = true
	}
	if ci.Timestamp.After(s.last) {
		s.last = ci.Timestamp
	}
	side := 1
	if dir == s.toServer {
		side = 0
	}
	if nextSeq != -1 && len(tcp.Payload) > 0 && nextSeq.Difference(reassembly.Sequence(tcp.Seq)) > 0 && s.gapAt[side] == 0 {
		s.gapAt[side] = packetNum(ac)
	}
	if side == 0 && (tcp.FIN || tcp.RST) && s.end.IsZero() {
		s.end = ci.Timestamp
	}
	return true
}

// ReassembledSG implements reassembly.Stream: it decodes the MQTT packets
// that the new bytes complete. A packet's time is the time of the segment
// that made its bytes contiguous: when the receiver could have read it.
func (s *stream) ReassembledSG(sg reassembly.ScatterGather, ac reassembly.AssemblerContext) {
	if s.ld.err != nil {
		return
	}
	dir, _, _, skip := sg.Info()
	n, _ := sg.Lengths()
	num := packetNum(ac)
	side, name := 1, "server to client"
	if dir == s.toServer {
		side, name = 0, "client to server"
	}
	if skip != 0 {
		at := s.gapAt[side]
		if at == 0 {
			at = num
		}
		s.ld.fail(fmt.Errorf("read packet %d: connection %s %s: %d bytes before this packet are missing from the capture: %w",
			at, s.sess.Client, name, skip, ErrBadCapture))
		return
	}
	if n == 0 {
		return
	}
	var ts time.Time
	if ac != nil {
		ts = ac.GetCaptureInfo().Timestamp
	}
	buf := append(s.buf[side], sg.Fetch(n)...)
	for len(buf) > 0 {
		k, err := mqtt.Decode(buf, maxMQTTPacket, &s.p)
		if err != nil {
			s.ld.fail(fmt.Errorf("read packet %d: connection %s %s: decode MQTT: %w: %w", num, s.sess.Client, name, ErrBadCapture, err))
			return
		}
		if k == 0 {
			break
		}
		st := timedStep{t: ts, Step: Step{At: 0, PacketNum: num, Type: s.p.Type, Size: k}}
		if s.p.Type == mqtt.TypePublish {
			st.PayloadLen = len(s.p.Payload)
		}
		if side == 0 {
			if s.p.Type == mqtt.TypeConnect && s.sess.ClientID == "" {
				s.sess.ClientID = string(s.p.Connect.ClientID)
				s.sess.Username = string(s.p.Connect.Username)
			}
			st.Raw = append([]byte(nil), buf[:k]...)
			s.sent = append(s.sent, st)
		} else {
			s.recv = append(s.recv, st)
		}
		buf = buf[k:]
	}
	s.buf[side] = append([]byte(nil), buf...)
}

// ReassemblyComplete implements reassembly.Stream.
func (s *stream) ReassemblyComplete(ac reassembly.AssemblerContext) bool { return true }

// workload turns the reassembled streams into a Workload.
func (ld *loader) workload() (*Workload, error) {
	w := &Workload{Port: int(ld.port), Packets: ld.packets}
	var keep []*stream
	for _, s := range ld.streams {
		if len(s.sent) == 0 && len(s.recv) == 0 && len(s.buf[0]) == 0 && len(s.buf[1]) == 0 {
			continue // no payload: a handshake alone, or segments after both FINs
		}
		if len(s.sent) == 0 || s.sent[0].Type != mqtt.TypeConnect {
			w.Skipped++
			continue
		}
		keep = append(keep, s)
	}
	if len(keep) == 0 {
		return nil, fmt.Errorf("read capture: %d packets, %d connections to port %d, none starting with CONNECT: %w",
			ld.packets, len(ld.streams), ld.port, ErrNoSessions)
	}
	sort.SliceStable(keep, func(i, j int) bool { return keep[i].open.Before(keep[j].open) })
	w.Start = keep[0].open
	off := func(t time.Time) time.Duration { return t.Sub(w.Start) }
	for _, s := range keep {
		ss := s.sess
		ss.Open = off(s.open)
		end := s.end
		if end.IsZero() {
			end = s.last
		}
		ss.End = off(end)
		ss.Partial = len(s.buf[0]) > 0 || len(s.buf[1]) > 0
		for _, st := range s.sent {
			st.At = off(st.t)
			ss.Sent = append(ss.Sent, st.Step)
		}
		for _, st := range s.recv {
			st.At = off(st.t)
			ss.Recv = append(ss.Recv, st.Step)
		}
		if last := off(s.last); last > w.Duration {
			w.Duration = last
		}
		w.Sessions = append(w.Sessions, ss)
	}
	return w, nil
}
