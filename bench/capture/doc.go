// Package capture records MQTT traffic into pcap files and replays the
// recorded sessions against a server: edgebench record and edgebench replay.
//
// Record captures the TCP traffic of one port on one interface with an
// AF_PACKET socket (Linux only, no libpcap, no cgo) and a classic BPF filter
// attached to the socket, and writes it with gopacket's pcapgo.Writer.
//
// Load reads a pcap or pcapng file (ours or tcpdump's: Ethernet, Linux
// cooked v1/v2, raw IP or BSD loopback), reassembles every TCP connection to
// the server port with gopacket's reassembly package and decodes the MQTT
// 3.1.1 packets of each direction into a Workload. Replay
// re-enacts each session of a Workload against a target on the recorded
// schedule (optionally faster or slower, optionally K copies), under mapped
// identities that log in with tokens minted for the target's secret, with
// payloads replaced by random bytes of the same size, and reports what was
// sent, what arrived and how far each packet was from its schedule.
//
// Lifecycle: Record opens its socket on the calling goroutine's OS thread, so
// a caller that wants to capture inside a network namespace locks a goroutine
// to a thread that has joined the namespace and calls Record there. Replay
// owns every connection it opens and closes them all before it returns. A
// Workload is read-only once loaded and may be replayed any number of times.
package capture
