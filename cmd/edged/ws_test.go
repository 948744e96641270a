package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"

	"github.com/edgedhq/edged/edge/mqtt"
	"github.com/edgedhq/edged/internal/testenv"
)

// mqttJS returns the path of mqtt.js's browser bundle, installing the
// version pinned in testdata/mqttjs (package-lock.json) with npm ci if it
// is not there. Without npm or the registry the test cannot run: it skips
// with the reason, or fails under EDGE_REQUIRE_PRIV=1 or CI=true.
func mqttJS(t *testing.T) string {
	t.Helper()
	dir, err := filepath.Abs(filepath.Join("testdata", "mqttjs"))
	if err != nil {
		t.Fatal(err)
	}
	bundle := filepath.Join(dir, "node_modules", "mqtt", "dist", "mqtt.min.js")
	if _, err := os.Stat(bundle); err == nil {
		return bundle
	}
	require := func(ok bool, why string) {
		t.Helper()
		if !ok && os.Getenv("CI") == "true" {
			t.Fatalf("required for this test: %s", why)
		}
		testenv.Require(t, ok, why)
	}
	npm, err := exec.LookPath("npm")
	require(err == nil, "mqtt.js is not installed in "+dir+" and npm is not on PATH to install it (apt-get install npm, or run npm ci there)")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, npm, "ci", "--no-audit", "--no-fund")
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	require(err == nil, fmt.Sprintf("npm ci in %s (to install mqtt.js from the npm registry) failed: %v\n%s", dir, err, out))
	_, err = os.Stat(bundle)
	require(err == nil, fmt.Sprintf("npm ci in %s did not produce %s: %v", dir, bundle, err))
	return bundle
}

// browserPage is the page under test: mqtt.js connects to the ws://
// listener as "browser", sends a direct message to "tcpbob" and answers
// bob's message with a read receipt; everything it receives goes to
// window.got ("topic payload" strings) for the test to read.
const browserPage = `<!doctype html>
<html><head><meta charset="utf-8"><script src="/mqtt.min.js"></script></head><body>
<script>
window.got = []; window.errors = [];
const c = mqtt.connect(%q, {clientId: "browser", protocolVersion: 4, clean: true, reconnectPeriod: 0});
c.on("error", e => window.errors.push(String(e)));
c.on("connect", () => {
  window.connected = true;
  c.publish("u/tcpbob/w1", "hello from chromium", {qos: 1}, e => { if (e) window.errors.push(String(e)); else window.acked = true; });
});
c.on("message", (topic, payload) => {
  window.got.push(topic + " " + payload.toString());
  if (topic === "u/browser/m/tcpbob/b1") c.publish("r/tcpbob/b1", "", {qos: 1});
});
</script></body></html>`

// TestWebSocketInChromium: a page with mqtt.js in a real headless
// Chromium exchanges a direct message and its receipts, both ways, with a
// TCP client through edged's ws:// listener.
func TestWebSocketInChromium(t *testing.T) {
	chrome := chromiumPath()
	testenv.Require(t, chrome != "", "chromium not installed (apt-get install chromium)")
	bundle := mqttJS(t)
	s, errb, stop := startRun(t, "--listen", "127.0.0.1:0,ws://127.0.0.1:0/mqtt", "--admin", "off", "--steering", "off", "--loops", "2")
	defer stop()
	wsURL := "ws://" + s.Addrs()[1].String() + "/mqtt"
	page := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/mqtt.min.js":
			http.ServeFile(w, r, bundle)
		case "/":
			w.Header().Set("Content-Type", "text/html")
			fmt.Fprintf(w, browserPage, wsURL)
		default:
			http.NotFound(w, r)
		}
	}))
	defer page.Close()

	bob, err := net.DialTimeout("tcp", s.Addr().String(), 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer bob.Close()
	mqttConnect(t, bob, "tcpbob", []byte{0x20, 2, 0, 0})
	bobIn := &pubReader{c: bob}

	bctx := headlessChromium(t, chrome)
	var mu sync.Mutex
	var jsErrs []string
	if err := chromedp.Listen(bctx, func(ev any) {
		if ev, ok := ev.(*runtime.EventExceptionThrown); ok {
			mu.Lock()
			jsErrs = append(jsErrs, fmt.Sprintf("%s at %s:%d", ev.ExceptionDetails.Text, ev.ExceptionDetails.URL, ev.ExceptionDetails.LineNumber))
			mu.Unlock()
		}
	}); err != nil {
		t.Fatalf("listen to the tab (is %s a working Chromium?): %v", chrome, err)
	}
	if err := chromedp.Do(bctx, chromedp.Navigate(page.URL+"/")); err != nil {
		t.Fatalf("open the page (is %s a working Chromium?): %v", chrome, err)
	}
	// waitGot waits until the page has received topic.
	waitGot := func(topic string) {
		t.Helper()
		js := fmt.Sprintf(`window.got.some(m => m.startsWith(%q))`, topic+" ")
		if _, err := chromedp.Run(bctx, chromedp.Poll[bool](js, chromedp.WithPollingTimeout(20*time.Second))); err != nil {
			got, _ := chromedp.Run(bctx, chromedp.Evaluate[[]string](`window.got.concat(window.errors)`))
			t.Fatalf("the page did not receive %s: %v (it has %q; JS errors %q; closes %v; log %s)", topic, err, got, jsErrs, s.Stats().Closes, errb.String())
		}
	}

	// browser -> bob: delivery, bob's PUBACK, the delivered receipt.
	p := bobIn.next(t)
	if p.topic != "u/tcpbob/m/browser/w1" || p.payload != "hello from chromium" {
		t.Fatalf("bob got %+v", p)
	}
	bob.Write(mqtt.AppendPuback(nil, p.id))
	waitGot("u/browser/d/tcpbob/w1")
	if _, err := chromedp.Run(bctx, chromedp.Poll[bool](`window.acked === true`, chromedp.WithPollingTimeout(20*time.Second))); err != nil {
		t.Fatalf("the page's publish was not acknowledged: %v", err)
	}

	// bob -> browser: delivery (mqtt.js acknowledges it), the delivered
	// receipt to bob, the page's read receipt to bob.
	bob.Write(mqtt.AppendPublish(nil, "u/browser/b1", []byte("hello from tcp"), 1, false, false, 7))
	// bob's PUBACK, the delivered receipt and the page's read receipt,
	// in any order: the PUBACK waits for the store's write while the
	// message already travels, and mqtt.js runs the message handler
	// (which sends the read receipt) before its PUBACK.
	want := map[string]bool{"puback": true, "u/tcpbob/d/browser/b1": true, "u/tcpbob/r/browser/b1": true}
	for range 3 {
		p := bobIn.next(t)
		switch {
		case p.typ == mqtt.TypePuback && p.id == 7 && want["puback"]:
			delete(want, "puback")
		case p.typ == mqtt.TypePublish && want[p.topic]:
			delete(want, p.topic)
			bob.Write(mqtt.AppendPuback(nil, p.id))
		default:
			t.Fatalf("bob got %+v, want one of %v", p, want)
		}
	}
	waitGot("u/browser/m/tcpbob/b1")
	got, err := chromedp.Run(bctx, chromedp.Evaluate[[]string](`window.got`))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(got, "|") != "u/browser/d/tcpbob/w1 |u/browser/m/tcpbob/b1 hello from tcp" {
		t.Errorf("the page received %q", got)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(jsErrs) > 0 {
		t.Errorf("JS errors: %q", jsErrs)
	}
}

type publish struct {
	typ            mqtt.Type
	topic, payload string
	id             uint16
}

// pubReader reads packets from a connection.
type pubReader struct {
	c   net.Conn
	buf []byte
}

// next reads one packet (10 s at most).
func (r *pubReader) next(t *testing.T) publish {
	t.Helper()
	r.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	var b [4096]byte
	for {
		var p mqtt.Packet
		n, err := mqtt.Decode(r.buf, 1<<20, &p)
		if err != nil {
			t.Fatalf("decode: %v", err)
		}
		if n > 0 {
			pub := publish{p.Type, string(p.Topic), string(p.Payload), p.PacketID}
			r.buf = r.buf[n:]
			return pub
		}
		k, err := r.c.Read(b[:])
		if err != nil {
			t.Fatalf("read: %v (have % x)", err, r.buf)
		}
		r.buf = append(r.buf, b[:k]...)
	}
}
