package capture

import (
	"net"
	"testing"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"golang.org/x/net/bpf"
)

// TestFilterProgram runs the capture filter in x/net/bpf's interpreter. The
// loopback variant's packet-type test needs the kernel (the interpreter has
// no SKF_AD_PKTTYPE); the privileged end-to-end test covers it.
func TestFilterProgram(t *testing.T) {
	raw, err := filterProgram(1883, false)
	if err != nil {
		t.Fatal(err)
	}
	ins, ok := bpf.Disassemble(raw)
	if !ok {
		t.Fatal("filter does not disassemble")
	}
	vm, err := bpf.NewVM(ins)
	if err != nil {
		t.Fatal(err)
	}
	v4 := func(proto layers.IPProtocol) gopacket.SerializableLayer {
		return &layers.IPv4{Version: 4, IHL: 5, TTL: 64, Protocol: proto, SrcIP: net.IPv4(127, 0, 0, 1), DstIP: net.IPv4(127, 0, 0, 1)}
	}
	v6 := &layers.IPv6{Version: 6, HopLimit: 64, NextHeader: layers.IPProtocolTCP, SrcIP: net.IPv6loopback, DstIP: net.IPv6loopback}
	tcp := func(src, dst layers.TCPPort) *layers.TCP { return &layers.TCP{SrcPort: src, DstPort: dst, Window: 1} }
	frame := func(et layers.EthernetType, ls ...gopacket.SerializableLayer) []byte {
		buf := gopacket.NewSerializeBuffer()
		all := append([]gopacket.SerializableLayer{&layers.Ethernet{SrcMAC: make(net.HardwareAddr, 6), DstMAC: make(net.HardwareAddr, 6), EthernetType: et}}, ls...)
		if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true}, all...); err != nil {
			t.Fatal(err)
		}
		return buf.Bytes()
	}
	ip4opts := &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolTCP, SrcIP: net.IPv4(127, 0, 0, 1), DstIP: net.IPv4(127, 0, 0, 1),
		Options: []layers.IPv4Option{{OptionType: 1}, {OptionType: 1}, {OptionType: 1}, {OptionType: 0}}}
	tests := []struct {
		name  string
		frame []byte
		keep  bool
	}{
		{"v4 to port", frame(layers.EthernetTypeIPv4, v4(layers.IPProtocolTCP), tcp(40000, 1883), gopacket.Payload("x")), true},
		{"v4 from port", frame(layers.EthernetTypeIPv4, v4(layers.IPProtocolTCP), tcp(1883, 40000)), true},
		{"v4 with options", frame(layers.EthernetTypeIPv4, ip4opts, tcp(40000, 1883)), true},
		{"v4 other port", frame(layers.EthernetTypeIPv4, v4(layers.IPProtocolTCP), tcp(40000, 1884)), false},
		{"v4 udp", frame(layers.EthernetTypeIPv4, v4(layers.IPProtocolUDP), &layers.UDP{SrcPort: 1883, DstPort: 1883}), false},
		{"v6 to port", frame(layers.EthernetTypeIPv6, v6, tcp(40000, 1883)), true},
		{"v6 other port", frame(layers.EthernetTypeIPv6, v6, tcp(40000, 80)), false},
		{"arp", frame(layers.EthernetTypeARP, &layers.ARP{AddrType: 1, Protocol: 0x800, HwAddressSize: 6, ProtAddressSize: 4,
			SourceHwAddress: make([]byte, 6), SourceProtAddress: make([]byte, 4), DstHwAddress: make([]byte, 6), DstProtAddress: make([]byte, 4)}), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n, err := vm.Run(tt.frame)
			if err != nil {
				t.Fatal(err)
			}
			if got := n > 0; got != tt.keep {
				t.Fatalf("filter returned %d for %s, want keep=%v", n, tt.name, tt.keep)
			}
		})
	}
}
