package web

import (
	"bytes"
	"context"
	"errors"
	"html"
	"image/png"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/kiln-dev/kiln/fleet"
	"github.com/kiln-dev/kiln/images"
)

// screenshotCopy is where TestInventoryPageInChromium leaves a copy of its
// screenshot for people to look at.
const screenshotCopy = "/tmp/kiln-inventory.png"

// TestInventoryPageInChromium renders GET / in a real headless Chromium, over
// a real server, fleet and image store, and checks what the browser built
// from it: the DOM it dumps and a screenshot.
func TestInventoryPageInChromium(t *testing.T) {
	chromium := needChromium(t)

	t.Run("fleet", func(t *testing.T) {
		e := newEnv(t) // publishes the "test-image" image
		const (
			mac1, host1 = "52:54:00:00:00:01", "node-a"
			mac2, host2 = "52:54:00:00:00:02", "node-b"
		)
		for _, m := range [][2]string{{mac1, host1}, {mac2, host2}} {
			resp, body := e.do(http.MethodPost, "/api/v1/machines", jsonHeader, machineBody(m[0], m[1], e.image))
			wantStatus(t, resp, body, http.StatusCreated)
		}
		// mac1 gets generation 2 before it ever booted: pending.
		resp, body := e.do(http.MethodPut, "/api/v1/machines/"+mac1, jsonHeader, machineBody(mac1, host1, e.image))
		wantStatus(t, resp, body, http.StatusOK)
		resp, body = e.get("/boot/" + mac2 + ".ipxe")
		wantStatus(t, resp, body, http.StatusOK)
		if m := e.machine(mac2); m.State != fleet.Booting {
			t.Fatalf("after its boot script, %s is %s, want %s", mac2, m.State, fleet.Booting)
		}

		dom := dumpDOM(t, chromium, e.srv.URL+"/")
		if !strings.Contains(dom, "<h1>kiln inventory</h1>") {
			t.Fatalf("Chromium did not render the inventory page:\n%s", dom)
		}
		if strings.Contains(dom, "No machines registered yet") || strings.Contains(dom, "No images in the store yet") {
			t.Errorf("page shows an empty state with machines and an image registered:\n%s", dom)
		}

		machines := tableAfter(t, dom, "Machines")
		wantHeader(t, machines, "MAC", "Hostname", "State", "Image", "IP", "Last seen", "Last boot", "Generation")
		if len(machines.rows) != 2 {
			t.Fatalf("machines table has %d rows, want 2 (one per machine):\n%s", len(machines.rows), dom)
		}
		byMAC := map[string][]cell{}
		for _, r := range machines.rows {
			if len(r) != len(machines.header) {
				t.Fatalf("machines row has %d cells, want %d: %+v", len(r), len(machines.header), r)
			}
			byMAC[r[0].text] = r
		}
		short := shortID(string(e.image))
		for _, want := range []struct {
			mac, host string
			state     fleet.State
		}{
			{mac1, host1, fleet.Assigned},
			{mac2, host2, fleet.Booting},
		} {
			r, ok := byMAC[want.mac]
			if !ok {
				t.Errorf("machines table has no row for %s; rows: %+v", want.mac, machines.rows)
				continue
			}
			if r[1].text != want.host {
				t.Errorf("%s: hostname %q, want %q", want.mac, r[1].text, want.host)
			}
			if r[2].text != string(want.state) || !r[2].hasClass("state-"+string(want.state)) {
				t.Errorf("%s: state cell %+v, want %q with class state-%s", want.mac, r[2], want.state, want.state)
			}
			if r[3].text != short+" (test-image)" || r[3].attr("title") != string(e.image) {
				t.Errorf("%s: image cell %+v, want %q titled %s", want.mac, r[3], short+" (test-image)", e.image)
			}
			if r[5].text == "" {
				t.Errorf("%s: empty last-seen cell", want.mac)
			}
		}
		if r := byMAC[mac2]; r != nil && r[5].text == "never" {
			t.Errorf("%s fetched its boot script but was last seen %q", mac2, r[5].text)
		}
		if r := byMAC[mac1]; r != nil && (r[7].text != "2 (pending)" || !r[7].hasClass("pending")) {
			t.Errorf("%s: generation cell %+v, want %q with class pending", mac1, r[7], "2 (pending)")
		}
		if r := byMAC[mac2]; r != nil && r[7].text != "1" {
			t.Errorf("%s: generation cell %+v, want %q", mac2, r[7], "1")
		}
		// The last boot: none for mac1; mac2's started with its script.
		if r := byMAC[mac1]; r != nil && (r[6].text != "not booted" || !r[6].hasClass("boot-none")) {
			t.Errorf("%s: last boot cell %+v, want %q with class boot-none", mac1, r[6], "not booted")
		}
		if r := byMAC[mac2]; r != nil {
			wantTitle := "+0.0 ms script (" + string(e.image) + ")"
			if r[6].text != "booting: script at +0.0 ms" || !r[6].hasClass("boot-booting") || r[6].attr("title") != wantTitle {
				t.Errorf("%s: last boot cell %+v, want %q with class boot-booting titled %q",
					mac2, r[6], "booting: script at +0.0 ms", wantTitle)
			}
		}

		imgs := tableAfter(t, dom, "Images")
		wantHeader(t, imgs, "ID", "Name", "Created", "Size")
		if len(imgs.rows) != 1 || len(imgs.rows[0]) != 4 {
			t.Fatalf("images table rows %+v, want one row of 4 cells", imgs.rows)
		}
		img := imgs.rows[0]
		if img[0].text != short || img[0].attr("title") != string(e.image) {
			t.Errorf("image ID cell %+v, want %q titled %s", img[0], short, e.image)
		}
		if img[1].text != "test-image" {
			t.Errorf("image name %q, want %q", img[1].text, "test-image")
		}
		if img[3].text != "76 B" { // kernel (43 B) + initrd (33 B)
			t.Errorf("image size %q, want %q", img[3].text, "76 B")
		}

		shot := screenshot(t, chromium, e.srv.URL+"/")
		if err := os.WriteFile(screenshotCopy, shot, 0o644); err != nil {
			t.Errorf("saving a copy of the screenshot: %v", err)
		} else {
			t.Logf("screenshot: %s", screenshotCopy)
		}
	})

	t.Run("empty", func(t *testing.T) {
		// newEnv always publishes an image; give the server a second, empty
		// image store so that both tables are empty.
		empty, err := images.Open(filepath.Join(t.TempDir(), "images"))
		if err != nil {
			t.Fatal(err)
		}
		e := newEnv(t, func(c *Config) { c.Images = empty })
		dom := dumpDOM(t, chromium, e.srv.URL+"/")
		for _, want := range []string{
			`<p class="empty">No machines registered yet. Add one with <code>kiln machines add</code> (MAC, hostname and image ID).</p>`,
			`<p class="empty">No images in the store yet. Bake one with <code>kiln build</code>.</p>`,
		} {
			if !strings.Contains(dom, want) {
				t.Errorf("empty page does not show %s:\n%s", want, dom)
			}
		}
		if strings.Contains(dom, "<table") {
			t.Errorf("empty page has a table:\n%s", dom)
		}
	})
}

// needChromium returns the path of chromium, or skips the test if it is not
// installed. CI must run the test, so there a missing chromium fails.
func needChromium(t *testing.T) string {
	t.Helper()
	path, err := exec.LookPath("chromium")
	if err == nil {
		return path
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("chromium not installed: run make deps (%v)", err)
	}
	t.Skipf("skipping: chromium is not installed (%v); apt-get install chromium to run this test", err)
	return ""
}

// runChromium runs a headless chromium with a fresh profile and args, and
// returns its standard output. exec.CommandContext kills it after 60 s.
func runChromium(t *testing.T, chromium string, args ...string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	args = append([]string{
		"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--user-data-dir=" + t.TempDir(),
	}, args...)
	cmd := exec.CommandContext(ctx, chromium, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	// Chromium's helpers may outlive it holding our pipes; do not wait on
	// them for long once chromium itself is gone.
	cmd.WaitDelay = 5 * time.Second
	start := time.Now()
	err := cmd.Run()
	if ctx.Err() != nil {
		err = errors.Join(err, ctx.Err())
	}
	if err != nil {
		t.Fatalf("chromium %s: %v after %v; stderr:\n%s", strings.Join(args, " "), err, time.Since(start).Round(time.Millisecond), tail(stderr.String(), 4000))
	}
	t.Logf("chromium %s: %v", args[len(args)-1], time.Since(start).Round(time.Millisecond))
	return stdout.Bytes()
}

// dumpDOM returns the DOM chromium built for url, serialized.
func dumpDOM(t *testing.T, chromium, url string) string {
	t.Helper()
	dom := runChromium(t, chromium, "--dump-dom", url)
	if len(dom) == 0 {
		t.Fatalf("chromium dumped an empty DOM for %s", url)
	}
	return string(dom)
}

// screenshot returns a 1280×800 PNG screenshot chromium took of url.
func screenshot(t *testing.T, chromium, url string) []byte {
	t.Helper()
	file := filepath.Join(t.TempDir(), "page.png")
	runChromium(t, chromium, "--screenshot="+file, "--window-size=1280,800", url)
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatalf("chromium took no screenshot: %v", err)
	}
	if len(b) <= 5<<10 {
		t.Errorf("screenshot is %d bytes, want more than 5 KiB", len(b))
	}
	cfg, err := png.DecodeConfig(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("screenshot is not a PNG: %v", err)
	}
	if cfg.Width != 1280 || cfg.Height != 800 {
		t.Errorf("screenshot is %d×%d, want 1280×800", cfg.Width, cfg.Height)
	}
	return b
}

// A table as read from the DOM: its header cells and its body rows.
type table struct {
	header []cell
	rows   [][]cell
}

// cell is one <td> or <th>: its attributes as written and its text, with
// tags removed, entities decoded and white space collapsed.
type cell struct {
	attrs string
	text  string
}

var attrRE = regexp.MustCompile(`([a-zA-Z-]+)="([^"]*)"`)

func (c cell) attr(name string) string {
	for _, m := range attrRE.FindAllStringSubmatch(c.attrs, -1) {
		if m[1] == name {
			return html.UnescapeString(m[2])
		}
	}
	return ""
}

func (c cell) hasClass(class string) bool {
	return strings.Contains(" "+c.attr("class")+" ", " "+class+" ")
}

var (
	theadRE = regexp.MustCompile(`(?s)<thead>(.*?)</thead>`)
	tbodyRE = regexp.MustCompile(`(?s)<tbody>(.*?)</tbody>`)
	trRE    = regexp.MustCompile(`(?s)<tr>(.*?)</tr>`)
	cellRE  = regexp.MustCompile(`(?s)<(t[dh])((?:\s[^>]*)?)>(.*?)</t[dh]>`)
	tagRE   = regexp.MustCompile(`<[^>]*>`)
)

// tableAfter returns the table in the section of dom headed <h2>heading</h2>,
// which ends at the next <h2> or <footer>.
func tableAfter(t *testing.T, dom, heading string) table {
	t.Helper()
	h := "<h2>" + heading + "</h2>"
	i := strings.Index(dom, h)
	if i < 0 {
		t.Fatalf("page has no %s:\n%s", h, dom)
	}
	sec := dom[i+len(h):]
	for _, end := range []string{"<h2", "<footer"} {
		if j := strings.Index(sec, end); j >= 0 {
			sec = sec[:j]
		}
	}
	head, body := theadRE.FindStringSubmatch(sec), tbodyRE.FindStringSubmatch(sec)
	if head == nil || body == nil {
		t.Fatalf("section %s has no table with a <thead> and a <tbody>:\n%s", h, sec)
	}
	var tab table
	for _, tr := range trRE.FindAllStringSubmatch(head[1], -1) {
		tab.header = append(tab.header, cells(tr[1])...)
	}
	for _, tr := range trRE.FindAllStringSubmatch(body[1], -1) {
		tab.rows = append(tab.rows, cells(tr[1]))
	}
	return tab
}

func cells(tr string) []cell {
	var cs []cell
	for _, m := range cellRE.FindAllStringSubmatch(tr, -1) {
		text := html.UnescapeString(tagRE.ReplaceAllString(m[3], ""))
		cs = append(cs, cell{attrs: m[2], text: strings.Join(strings.Fields(text), " ")})
	}
	return cs
}

func wantHeader(t *testing.T, tab table, want ...string) {
	t.Helper()
	var got []string
	for _, c := range tab.header {
		got = append(got, c.text)
	}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Fatalf("table header %q, want %q", got, want)
	}
}

// tail returns the last n bytes of s.
func tail(s string, n int) string {
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}
