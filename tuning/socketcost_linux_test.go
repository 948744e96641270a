package tuning

import (
	"bufio"
	"os"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// slabCaches are the caches an idle, epoll-registered TCP socket lives in
// (KernelSocketBytes).
var slabCaches = []string{"TCP", "sock_inode_cache", "filp", "dentry", "eventpoll_epi", "eventpoll_pwq"}

// slabUsage returns active objects and object size per cache from
// /proc/slabinfo (root only).
func slabUsage(tb testing.TB) map[string][2]int64 {
	f, err := os.Open("/proc/slabinfo")
	if err != nil {
		tb.Skipf("read /proc/slabinfo: %v", err)
	}
	defer f.Close()
	out := map[string][2]int64{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fld := strings.Fields(sc.Text())
		if len(fld) < 4 {
			continue
		}
		active, err1 := strconv.ParseInt(fld[1], 10, 64)
		size, err2 := strconv.ParseInt(fld[3], 10, 64)
		if err1 == nil && err2 == nil {
			out[fld[0]] = [2]int64{active, size}
		}
	}
	return out
}

// BenchmarkIdleSocketSlab holds pairs idle loopback TCP connections, the
// accepted ends in one epoll set as edged holds them, and reports the slab
// bytes per accepted socket (both ends are counted, so per socket is half
// of the pair's sockets, plus one epoll item) from /proc/slabinfo deltas.
// It checks KernelSocketBytes on the running kernel; other processes
// allocating dentries or files at the same time add noise, so run it on a
// quiet machine: go test -run=^$ -bench=IdleSocketSlab -benchtime=3x ./tuning
func BenchmarkIdleSocketSlab(b *testing.B) {
	const pairs = 4000 // 8000 fds: under the 20,000 per-process cap
	var perSocket, epItems float64
	for b.Loop() {
		before := slabUsage(b)
		ln, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			b.Fatal(os.NewSyscallError("socket", err))
		}
		sa := &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}
		if err := unix.Bind(ln, sa); err != nil {
			b.Fatal(os.NewSyscallError("bind", err))
		}
		if err := unix.Listen(ln, 128); err != nil {
			b.Fatal(os.NewSyscallError("listen", err))
		}
		lsa, _ := unix.Getsockname(ln)
		ep, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
		if err != nil {
			b.Fatal(os.NewSyscallError("epoll_create1", err))
		}
		var fds []int
		for range pairs {
			c, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
			if err != nil {
				b.Fatal(os.NewSyscallError("socket", err))
			}
			if err := unix.Connect(c, lsa); err != nil {
				b.Fatal(os.NewSyscallError("connect", err))
			}
			s, _, err := unix.Accept4(ln, unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK)
			if err != nil {
				b.Fatal(os.NewSyscallError("accept4", err))
			}
			ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLET, Fd: int32(s)}
			if err := unix.EpollCtl(ep, unix.EPOLL_CTL_ADD, s, &ev); err != nil {
				b.Fatal(os.NewSyscallError("epoll_ctl", err))
			}
			fds = append(fds, c, s)
		}
		after := slabUsage(b)
		var sockBytes, epBytes int64
		for _, name := range slabCaches {
			d := (after[name][0] - before[name][0]) * after[name][1]
			if strings.HasPrefix(name, "eventpoll") {
				epBytes += d
			} else {
				sockBytes += d
			}
		}
		for _, name := range slabCaches {
			b.Logf("%s: %+d objects of %d B", name, after[name][0]-before[name][0], after[name][1])
		}
		perSocket = float64(sockBytes) / (2 * pairs)
		epItems = float64(epBytes) / pairs
		for _, fd := range fds {
			unix.Close(fd)
		}
		unix.Close(ep)
		unix.Close(ln)
	}
	b.ReportMetric(perSocket, "slab-B/socket")
	b.ReportMetric(epItems, "epoll-B/socket")
	b.ReportMetric(perSocket+epItems, "total-B/socket")
	b.ReportMetric(KernelSocketBytes, "const-B/socket")
}
