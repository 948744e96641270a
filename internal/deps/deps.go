package deps
import (
 _ "github.com/cilium/ebpf"
 _ "golang.org/x/sys/unix"
 _ "github.com/google/gopacket"
 _ "github.com/pkg/profile"
 _ "github.com/eclipse/paho.mqtt.golang"
 _ "github.com/HdrHistogram/hdrhistogram-go"
 _ "github.com/prometheus/client_golang/prometheus"
 _ "go.uber.org/goleak"
)
