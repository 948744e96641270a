package main

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"

	"github.com/edgedhq/edged/edge/mqtt"
	"github.com/edgedhq/edged/internal/testenv"
)

// chromiumPath finds Debian's chromium (or another Chrome build).
func chromiumPath() string {
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "headless-shell"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	return ""
}

// TestDashboardInChromium opens edged's dashboard at the admin address in a
// real headless Chromium, connects n real MQTT clients and waits until the
// page's data-metric="connections" element shows n (and 0 once they have
// left). The page must load nothing from any other origin, throw no script
// error, and draw its charts.
func TestDashboardInChromium(t *testing.T) {
	chrome := chromiumPath()
	testenv.Require(t, chrome != "", "chromium not installed (apt-get install chromium)")
	s, _, stop := startRun(t, "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0", "--steering", "off", "--loops", "2")
	defer stop()
	page := "http://" + s.AdminAddr().String() + "/"

	bctx := headlessChromium(t, chrome)

	var mu sync.Mutex
	var foreign, errs []string
	if err := chromedp.Listen(bctx, func(ev any) {
		mu.Lock()
		defer mu.Unlock()
		switch ev := ev.(type) {
		case *network.EventRequestWillBeSent:
			if u, err := url.Parse(ev.Request.URL); err != nil || u.Host != s.AdminAddr().String() {
				foreign = append(foreign, ev.Request.URL)
			}
		case *runtime.EventExceptionThrown:
			errs = append(errs, fmt.Sprintf("%s at %s:%d", ev.ExceptionDetails.Text, ev.ExceptionDetails.URL, ev.ExceptionDetails.LineNumber))
		}
	}); err != nil {
		t.Fatalf("listen to the tab (is %s a working Chromium?): %v", chrome, err)
	}
	// showsConns waits (at most 30 s: samples come once a second) until the
	// page's connection count reads n.
	showsConns := func(n int) error {
		_, err := chromedp.Run(bctx, chromedp.Poll[bool](fmt.Sprintf(`document.querySelector('[data-metric="connections"]').textContent === "%d"`, n),
			chromedp.WithPollingTimeout(30*time.Second)))
		if err != nil {
			shown, _ := chromedp.Run(bctx, chromedp.TextContent(chromedp.CSS(`[data-metric="connections"]`)))
			return fmt.Errorf("the page shows %q: %w", shown, err)
		}
		return nil
	}
	if err := chromedp.Do(bctx, chromedp.Navigate(page)); err != nil {
		t.Fatalf("open %s: %v", page, err)
	}
	if err := showsConns(0); err != nil {
		t.Fatalf("wait for 0 connections: %v", err)
	}

	const n = 20
	conns := make([]net.Conn, 0, n)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for i := range n {
		c, err := net.DialTimeout("tcp", s.Addr().String(), 10*time.Second)
		if err != nil {
			t.Fatalf("dial %d: %v", i, err)
		}
		conns = append(conns, c)
		c.Write(mqtt.AppendConnect(nil, &mqtt.Connect{ProtocolName: []byte("MQTT"), ProtocolLevel: 4,
			ClientID: []byte(fmt.Sprintf("dash-%d", i)), CleanSession: true, KeepAlive: 60}))
		var b [4]byte
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if k, err := c.Read(b[:]); err != nil || k != 4 || b[0] != 0x20 || b[3] != 0 {
			t.Fatalf("client %d: CONNACK % x, %v", i, b[:k], err)
		}
	}
	if err := showsConns(n); err != nil {
		t.Fatalf("wait for %d connections on the page: %v", n, err)
	}
	lines, err := chromedp.Run(bctx, chromedp.Evaluate[int](`document.querySelectorAll('#charts svg polyline[points*=","]').length`))
	if err != nil {
		t.Fatal(err)
	}
	if lines < 8 {
		t.Errorf("%d chart lines drawn, want at least 8 (connections, messages, deliveries, queues, loops, memory, GC)", lines)
	}
	for _, c := range conns {
		c.Close()
	}
	conns = nil
	if err := showsConns(0); err != nil {
		t.Fatalf("wait for 0 connections after the clients left: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(foreign) > 0 {
		t.Errorf("the dashboard requested other origins: %s", strings.Join(foreign, ", "))
	}
	if len(errs) > 0 {
		t.Errorf("script errors: %s", strings.Join(errs, "; "))
	}
}

// headlessChromium starts the Chromium at chrome, headless, for the rest
// of the test (90 s at most) and returns its browser context.
func headlessChromium(t *testing.T, chrome string) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	t.Cleanup(cancel)
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(chrome),
		chromedp.NoSandbox, // tests run as root, where Chromium's sandbox refuses to start
		chromedp.Flag("disable-gpu", true), chromedp.UserDataDir(t.TempDir()))
	actx, cancelA := chromedp.NewExecAllocator(ctx, opts...)
	t.Cleanup(cancelA)
	bctx, cancelB := chromedp.NewContext(actx, chromedp.WithLogf(t.Logf))
	t.Cleanup(cancelB)
	return bctx
}
