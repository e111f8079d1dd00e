package webview

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/slotbroker/slotbroker/broker/brokertest"
	"github.com/slotbroker/slotbroker/client"
	"github.com/slotbroker/slotbroker/messages"
)

// holderHTML is a holder text that would be a bold element if the page
// put it in as HTML.
const holderHTML = "<b>html</b>"

// testContext ends with the test, or after 60 s.
func testContext(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// workload is a real embedded broker with the limit "db" of one slot, held
// by a lease whose holder text is holderHTML, and one waiter queued behind
// it; and the live view of that broker on a test server.
type workload struct {
	e      *brokertest.Embedded
	srv    *httptest.Server
	first  *client.Lease
	second chan *client.Lease
}

func startWorkload(t *testing.T) *workload {
	t.Helper()
	ctx := testContext(t)
	e, err := brokertest.NewEmbedded(brokertest.EmbeddedConfig{StoreDir: t.TempDir()})
	if err != nil {
		t.Fatalf("start embedded broker: %v", err)
	}
	t.Cleanup(e.Stop)
	w := &workload{e: e, second: make(chan *client.Lease, 1)}
	w.srv = httptest.NewServer(Handler(func(ctx context.Context) ([]messages.LimitInfo, error) {
		return e.Client.ListLimits(ctx)
	}))
	t.Cleanup(w.srv.Close)
	if _, err := e.Client.CreateLimit(ctx, "db", 1); err != nil {
		t.Fatal(err)
	}
	if w.first, err = e.Client.Acquire(ctx, "db", 1, client.WithHolder(holderHTML)); err != nil {
		t.Fatal(err)
	}
	queued := make(chan struct{})
	errc := make(chan error, 1)
	go func() {
		l, err := e.Client.Acquire(ctx, "db", 1, client.WithHolder("second-in-line"),
			client.WithQueued(func(client.Queued) { close(queued) }))
		if err != nil {
			errc <- err
			return
		}
		w.second <- l
	}()
	select {
	case <-queued:
	case err := <-errc:
		t.Fatalf("second acquire: %v", err)
	case <-ctx.Done():
		t.Fatal("the second acquire was not queued")
	}
	t.Cleanup(func() {
		select {
		case l := <-w.second:
			_ = l.Release(context.Background())
		default:
		}
	})
	return w
}

// handOver releases the first lease and waits until the waiter holds.
func (w *workload) handOver(t *testing.T) {
	t.Helper()
	ctx := testContext(t)
	if err := w.first.Release(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case l := <-w.second:
		w.second <- l // released at cleanup
	case <-ctx.Done():
		t.Fatal("the waiter was not granted the slot")
	}
}

// decodeSnapshot parses a snapshot's JSON.
func decodeSnapshot(t *testing.T, b []byte) (time.Time, []messages.LimitInfo, string) {
	t.Helper()
	var s struct {
		Now    time.Time            `json:"now"`
		Limits []messages.LimitInfo `json:"limits"`
		Error  string               `json:"error"`
	}
	if err := json.Unmarshal(b, &s); err != nil {
		t.Fatalf("snapshot %q: %v", b, err)
	}
	return s.Now, s.Limits, s.Error
}

func findLimit(limits []messages.LimitInfo, name string) *messages.LimitInfo {
	for i := range limits {
		if limits[i].Name == name {
			return &limits[i]
		}
	}
	return nil
}

// TestAPILimitsShowsHoldersAndWaiters: /api/limits is the current snapshot
// of a real broker: the limit, its holder (with its text and when it was
// acquired) and its waiter.
func TestAPILimitsShowsHoldersAndWaiters(t *testing.T) {
	w := startWorkload(t)
	resp, err := http.Get(w.srv.URL + "/api/limits")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		t.Fatalf("GET /api/limits: %s, %q: %s", resp.Status, resp.Header.Get("Content-Type"), body)
	}
	now, limits, _ := decodeSnapshot(t, body)
	if time.Since(now).Abs() > time.Minute {
		t.Errorf("snapshot time %v is not now", now)
	}
	db := findLimit(limits, "db")
	if db == nil {
		t.Fatalf("no limit db in %s", body)
	}
	if db.Limit.Limit != 1 || db.ActiveSlots != 1 || len(db.Holders) != 1 || db.Holders[0].Holder != holderHTML ||
		db.Holders[0].AcquiredAt.IsZero() || db.WaitersTotal != 1 || len(db.Waiters) != 1 ||
		db.Waiters[0].Holder != "second-in-line" || db.Waiters[0].Since.IsZero() {
		t.Errorf("db in /api/limits: %s", body)
	}
}

// TestAPILimitsReportsTheSourcesError: a failing source is a 502 whose
// snapshot carries the error.
func TestAPILimitsReportsTheSourcesError(t *testing.T) {
	srv := httptest.NewServer(Handler(func(context.Context) ([]messages.LimitInfo, error) {
		return nil, errors.New("no broker answered")
	}))
	defer srv.Close()
	resp, err := http.Get(srv.URL + "/api/limits")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if _, _, msg := decodeSnapshot(t, body); resp.StatusCode != http.StatusBadGateway || msg != "no broker answered" {
		t.Errorf("GET /api/limits of a failing source: %s: %s", resp.Status, body)
	}
}

// sseReader reads the snapshots of an event stream.
type sseReader struct {
	sc   *bufio.Scanner
	data chan []byte
	errc chan error
}

func readEvents(t *testing.T, ctx context.Context, url string) *sseReader {
	t.Helper()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("GET /events: %s, %q", resp.Status, resp.Header.Get("Content-Type"))
	}
	r := &sseReader{sc: bufio.NewScanner(resp.Body), data: make(chan []byte, 100), errc: make(chan error, 1)}
	r.sc.Buffer(nil, 1<<20)
	go func() {
		var data []byte
		for r.sc.Scan() {
			line := r.sc.Bytes()
			switch {
			case bytes.HasPrefix(line, []byte("data: ")):
				data = append(data, line[len("data: "):]...)
			case len(line) == 0 && data != nil:
				r.data <- data
				data = nil
			}
		}
		r.errc <- r.sc.Err()
	}()
	return r
}

// next waits for the next snapshot until ctx ends.
func (r *sseReader) next(t *testing.T, ctx context.Context) []byte {
	t.Helper()
	select {
	case b := <-r.data:
		return b
	case err := <-r.errc:
		t.Fatalf("event stream ended: %v", err)
	case <-ctx.Done():
		t.Fatal("no snapshot before the deadline")
	}
	return nil
}

// TestEventsPushChanges: /events sends the snapshot at once, then a new one
// after the limits change (the waiter is granted the slot, a limit is
// created), and none while nothing changes.
func TestEventsPushChanges(t *testing.T) {
	w := startWorkload(t)
	ctx := testContext(t)
	ev := readEvents(t, ctx, w.srv.URL+"/events")

	_, limits, _ := decodeSnapshot(t, ev.next(t, ctx))
	if db := findLimit(limits, "db"); db == nil || len(db.Holders) != 1 || db.Holders[0].Holder != holderHTML || db.WaitersTotal != 1 {
		t.Fatalf("first snapshot: %+v", limits)
	}
	// Nothing changes: no snapshot within a few polls.
	select {
	case b := <-ev.data:
		t.Fatalf("a snapshot while nothing changed: %s", b)
	case <-time.After(3 * PollInterval):
	}

	w.handOver(t)
	deadline, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	for {
		_, limits, _ = decodeSnapshot(t, ev.next(t, deadline))
		db := findLimit(limits, "db")
		if db != nil && len(db.Holders) == 1 && db.Holders[0].Holder == "second-in-line" && db.WaitersTotal == 0 {
			break
		}
	}

	if _, err := w.e.Client.CreateLimit(ctx, "api", 5, client.WithSlotDecay(2)); err != nil {
		t.Fatal(err)
	}
	for {
		_, limits, _ = decodeSnapshot(t, ev.next(t, deadline))
		if api := findLimit(limits, "api"); api != nil && api.SlotDecayPerSecond == 2 {
			break
		}
	}
}

// TestEventsStopPollingWithoutListeners: the source is polled only while
// an event stream is open.
func TestEventsStopPollingWithoutListeners(t *testing.T) {
	calls := make(chan struct{}, 1000)
	srv := httptest.NewServer(Handler(func(context.Context) ([]messages.LimitInfo, error) {
		calls <- struct{}{}
		return nil, nil
	}))
	defer srv.Close()
	ctx := testContext(t)
	sctx, stop := context.WithCancel(ctx)
	ev := readEvents(t, sctx, srv.URL+"/events")
	if _, limits, _ := decodeSnapshot(t, ev.next(t, ctx)); limits == nil || len(limits) != 0 {
		t.Errorf("snapshot of no limits: %v, want []", limits)
	}
	for range 2 { // polled again while listened to
		select {
		case <-calls:
		case <-ctx.Done():
			t.Fatal("the source is not polled while a stream is open")
		}
	}
	stop()
	// After the stream ends, at most a call in flight, then none.
	quiet := time.NewTimer(4 * PollInterval)
	defer quiet.Stop()
	n := 0
	for done := false; !done; {
		select {
		case <-calls:
			n++
			quiet.Reset(4 * PollInterval)
		case <-quiet.C:
			done = true
		case <-ctx.Done():
			t.Fatal("the source is still polled after the stream ended")
		}
	}
	if n > 2 {
		t.Errorf("%d polls after the stream ended", n)
	}
}

// TestPageIsSelfContained: the page, its style and script are served from
// the binary, and nothing refers to another origin.
func TestPageIsSelfContained(t *testing.T) {
	srv := httptest.NewServer(Handler(func(context.Context) ([]messages.LimitInfo, error) { return nil, nil }))
	defer srv.Close()
	for path, ctype := range map[string]string{"/": "text/html", "/style.css": "text/css", "/app.js": "text/javascript"} {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), ctype) {
			t.Errorf("GET %s: %s, %q", path, resp.Status, resp.Header.Get("Content-Type"))
		}
		if resp.Header.Get("Content-Security-Policy") == "" {
			t.Errorf("GET %s: no Content-Security-Policy", path)
		}
		for _, ext := range []string{"http://", "https://", "//fonts", "innerHTML", "outerHTML", "insertAdjacentHTML", "document.write"} {
			if bytes.Contains(body, []byte(ext)) {
				t.Errorf("%s contains %q", path, ext)
			}
		}
	}
	resp, err := http.Get(srv.URL + "/nothing-here")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("GET /nothing-here: %s, want 404", resp.Status)
	}
}

// chromium finds Debian's headless browser, or skips the test.
func chromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Skip("no chromium or chromium-browser on PATH: the browser test needs it; on Debian: apt-get install chromium")
	return ""
}

// browser is headless chromium driven over the DevTools protocol on
// --remote-debugging-pipe: JSON messages separated by NUL bytes, written to
// its fd 3 and read from its fd 4. (Not --dump-dom with
// --virtual-time-budget: the page's open event stream is a network fetch
// that never ends, and virtual time stands still while one is pending, so
// the budget never runs out.)
type browser struct {
	t       *testing.T
	ctx     context.Context
	cmd     *exec.Cmd
	stderr  bytes.Buffer
	in      *os.File // the browser's fd 3
	msgs    chan map[string]json.RawMessage
	id      int
	session string
}

func startBrowser(t *testing.T, bin string) *browser {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	t.Cleanup(cancel)
	toBrowser, in, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	out, fromBrowser, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	b := &browser{t: t, ctx: ctx, in: in, msgs: make(chan map[string]json.RawMessage, 100)}
	b.cmd = exec.CommandContext(ctx, bin, "--headless", "--disable-gpu", "--no-sandbox", "--no-first-run",
		"--disable-dev-shm-usage", "--hide-scrollbars", "--window-size=1200,800", "--user-data-dir="+t.TempDir(),
		"--remote-debugging-pipe", "about:blank")
	b.cmd.ExtraFiles = []*os.File{toBrowser, fromBrowser}
	b.cmd.Stderr = &b.stderr
	if err := b.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", bin, err)
	}
	toBrowser.Close()
	fromBrowser.Close()
	waited := make(chan struct{})
	go func() {
		defer close(b.msgs)
		r := bufio.NewReader(out)
		for {
			raw, err := r.ReadBytes(0)
			if err != nil {
				return
			}
			var m map[string]json.RawMessage
			if json.Unmarshal(raw[:len(raw)-1], &m) == nil {
				b.msgs <- m
			}
		}
	}()
	go func() {
		_ = b.cmd.Wait()
		out.Close()
		close(waited)
	}()
	t.Cleanup(func() {
		b.call("Browser.close", nil, nil)
		in.Close()
		select {
		case <-waited:
		case <-time.After(10 * time.Second):
			_ = b.cmd.Process.Kill()
			<-waited
		}
	})
	var target struct{ TargetID string }
	b.call("Target.createTarget", map[string]any{"url": "about:blank"}, &target)
	var attached struct{ SessionID string }
	b.call("Target.attachToTarget", map[string]any{"targetId": target.TargetID, "flatten": true}, &attached)
	b.session = attached.SessionID
	b.must("Emulation.setDeviceMetricsOverride", map[string]any{"width": 1200, "height": 800, "deviceScaleFactor": 1, "mobile": false}, nil)
	return b
}

// call sends a command (to the page once attached) and decodes its result
// into result; it reports whether the browser answered without an error.
func (b *browser) call(method string, params, result any) bool {
	b.id++
	msg := map[string]any{"id": b.id, "method": method}
	if params != nil {
		msg["params"] = params
	}
	if b.session != "" && !strings.HasPrefix(method, "Browser.") {
		msg["sessionId"] = b.session
	}
	data, _ := json.Marshal(msg)
	if _, err := b.in.Write(append(data, 0)); err != nil {
		return false
	}
	want, _ := json.Marshal(b.id)
	for {
		select {
		case m, ok := <-b.msgs:
			if !ok {
				return false
			}
			if !bytes.Equal(m["id"], want) {
				continue // an event, or the answer to another session
			}
			if m["error"] != nil {
				b.t.Logf("%s: %s", method, m["error"])
				return false
			}
			if result != nil {
				if err := json.Unmarshal(m["result"], result); err != nil {
					b.t.Fatalf("%s: result %s: %v", method, m["result"], err)
				}
			}
			return true
		case <-b.ctx.Done():
			b.t.Fatalf("%s: no answer from the browser; its stderr:\n%s", method, b.stderr.String())
		}
	}
}

// must is call that fails the test when the browser does not answer.
func (b *browser) must(method string, params, result any) {
	b.t.Helper()
	if !b.call(method, params, result) {
		b.t.Fatalf("%s failed; the browser's stderr:\n%s", method, b.stderr.String())
	}
}

// eval evaluates a JavaScript expression in the page and returns its
// value as a string.
func (b *browser) eval(expr string) string {
	b.t.Helper()
	var r struct {
		Result struct {
			Value any `json:"value"`
		} `json:"result"`
	}
	b.must("Runtime.evaluate", map[string]any{"expression": expr, "returnByValue": true}, &r)
	if s, ok := r.Result.Value.(string); ok {
		return s
	}
	v, _ := json.Marshal(r.Result.Value)
	return string(v)
}

// open loads url in the page.
func (b *browser) open(url string) {
	b.t.Helper()
	b.must("Page.navigate", map[string]any{"url": url}, nil)
}

// dom is the page's DOM as HTML, as --dump-dom prints it.
func (b *browser) dom() string { return b.eval("document.documentElement.outerHTML") }

// waitFor polls the DOM until ok accepts it, for up to 15 s, and returns it.
func (b *browser) waitFor(what string, ok func(dom string) bool) string {
	b.t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		dom := b.dom()
		if ok(dom) {
			return dom
		}
		if time.Now().After(deadline) {
			b.t.Fatalf("the page did not show %s within 15 s; its DOM:\n%s", what, dom)
		}
		<-tick.C
	}
}

// screenshot saves the page as a PNG file at path, and a copy in
// $WEBVIEW_SCREENSHOT_DIR when that is set.
func (b *browser) screenshot(path string) int {
	b.t.Helper()
	var shot struct{ Data []byte }
	b.must("Page.captureScreenshot", map[string]any{"format": "png"}, &shot)
	if !bytes.HasPrefix(shot.Data, []byte("\x89PNG")) {
		b.t.Fatalf("the screenshot is not a PNG: %.20q", shot.Data)
	}
	if err := os.WriteFile(path, shot.Data, 0o644); err != nil {
		b.t.Fatal(err)
	}
	if dir := os.Getenv("WEBVIEW_SCREENSHOT_DIR"); dir != "" { // kept, e.g. as CI artifacts
		if err := os.WriteFile(filepath.Join(dir, filepath.Base(path)), shot.Data, 0o644); err != nil {
			b.t.Errorf("keep the screenshot in $WEBVIEW_SCREENSHOT_DIR: %v", err)
		}
	}
	return len(shot.Data)
}

// card is the HTML of the named limit's card in dom, and of its holders
// and its waiters lists; empty when the page has no such card.
func card(dom, name string) (all, holders, waiters string) {
	i := strings.Index(dom, `data-name="`+name+`"`)
	if i < 0 {
		return "", "", ""
	}
	all = dom[i:]
	if j := strings.Index(all, "</section>"); j >= 0 {
		all = all[:j]
	}
	h, w := strings.Index(all, `class="holders"`), strings.Index(all, `class="waiters"`)
	if h < 0 || w < h {
		return all, "", ""
	}
	return all, all[h:w], all[w:]
}

// TestBrowserShowsLiveLimits loads the page in a real browser (headless
// chromium) against a real broker. The limit's card shows its name, "1 / 1"
// slots, one waiter and the holder's text as text (not as a bold element).
// When the holder releases, the page changes by itself (the event stream):
// the waiter holds and nobody waits; loaded again, it shows the same. It
// saves a screenshot.
func TestBrowserShowsLiveLimits(t *testing.T) {
	bin := chromium(t)
	w := startWorkload(t)
	b := startBrowser(t, bin)
	b.open(w.srv.URL + "/")

	escaped := "&lt;b&gt;html&lt;/b&gt;"
	dom := b.waitFor("db held with one waiter", func(dom string) bool {
		c, h, wt := card(dom, "db")
		return strings.Contains(c, ">1 / 1<") && strings.Contains(c, ">1 waiting<") &&
			strings.Contains(h, escaped) && strings.Contains(wt, "second-in-line")
	})
	c, h, wt := card(dom, "db")
	if !strings.Contains(c, `<h2 class="name">db</h2>`) {
		t.Errorf("db's card does not name it:\n%s", c)
	}
	if !strings.Contains(h, ">held ") || !strings.Contains(wt, ">waiting ") {
		t.Errorf("the card does not say how long they held and waited:\n%s", c)
	}
	if strings.Contains(dom, "<b>") || b.eval(`String(document.querySelectorAll("b").length)`) != "0" {
		t.Errorf("the holder text %q became HTML:\n%s", holderHTML, dom)
	}
	if got := b.eval(`document.querySelector('[data-name="db"] .holders .who').textContent`); got != holderHTML {
		t.Errorf("the holder's text reads %q, want %q", got, holderHTML)
	}
	// A rate limit shows its level draining.
	ctx := testContext(t)
	if _, err := w.e.Client.CreateLimit(ctx, "api", 4, client.WithSlotDecay(0.5)); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if err := w.e.Client.TryRateLimit(ctx, "api", 1); err != nil {
			t.Fatal(err)
		}
	}
	b.waitFor("api's level", func(dom string) bool {
		c, _, _ := card(dom, "api")
		return strings.Contains(c, ">3 / 4<") && strings.Contains(c, "draining 0.5 slots/s")
	})
	shot := filepath.Join(t.TempDir(), "liveview.png")
	n := b.screenshot(shot)
	t.Logf("screenshot with db held and one waiter: %s (%d bytes)", shot, n)

	// Live: the same page, not reloaded, follows the hand-over.
	w.handOver(t)
	handedOver := func(dom string) bool {
		c, h, wt := card(dom, "db")
		return strings.Contains(c, ">1 / 1<") && strings.Contains(c, ">0 waiting<") &&
			strings.Contains(h, "second-in-line") && !strings.Contains(h, "html") && !strings.Contains(wt, "second-in-line")
	}
	b.waitFor("the waiter holding db, live", handedOver)
	if got := b.eval(`document.getElementById("status").textContent`); got != "live" {
		t.Errorf("the status reads %q, want live", got)
	}
	// Loaded again, it shows the same.
	b.open(w.srv.URL + "/")
	b.waitFor("the waiter holding db, reloaded", handedOver)
	shot = filepath.Join(t.TempDir(), "liveview-after.png")
	n = b.screenshot(shot)
	t.Logf("screenshot after the hand-over: %s (%d bytes)", shot, n)
}
