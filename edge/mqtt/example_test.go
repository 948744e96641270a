package mqtt_test

import (
	"fmt"

	"github.com/edgedhq/edged/edge/mqtt"
)

// An event loop decodes every complete packet in its read buffer and keeps
// the partial tail for the next read. Anything kept past the next read must
// be copied, because the decoded slices alias the buffer.
func ExampleDecode() {
	stream := mqtt.AppendPublish(nil, "a/b", []byte("hi"), 1, false, false, 7)
	stream = mqtt.AppendPingreq(stream)
	read1, read2 := stream[:5], stream[5:] // the first read ends mid-packet

	var p mqtt.Packet
	var out []byte
	handle := func(buf []byte) (rest []byte) {
		for {
			n, err := mqtt.Decode(buf, 256<<10, &p)
			if err != nil {
				fmt.Println("close connection:", err)
				return nil
			}
			if n == 0 {
				return buf // partial packet: keep it, read more
			}
			switch p.Type {
			case mqtt.TypePublish:
				fmt.Printf("PUBLISH %s %q id=%d\n", p.Topic, p.Payload, p.PacketID)
				out = mqtt.AppendPuback(out, p.PacketID)
			case mqtt.TypePingreq:
				fmt.Println("PINGREQ")
				out = mqtt.AppendPingresp(out)
			}
			buf = buf[n:]
		}
	}
	tail := append([]byte(nil), handle(read1)...) // copy the partial tail out
	handle(append(tail, read2...))
	fmt.Printf("reply % x\n", out)
	// Output:
	// PUBLISH a/b "hi" id=7
	// PINGREQ
	// reply 40 02 00 07 d0 00
}

func ExampleMatchTopic() {
	fmt.Println(mqtt.MatchTopic("sport/+/player1/#", "sport/tennis/player1"))
	fmt.Println(mqtt.MatchTopic("#", "$SYS/uptime"))
	// Output:
	// true
	// false
}
