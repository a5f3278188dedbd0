package web

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/kiln-dev/kiln/fleet"
)

func TestInventoryPage(t *testing.T) {
	e := newEnv(t)
	e.addMachine(testMAC, testHostname, e.image)
	resp, body := e.get("/")
	wantStatus(t, resp, body, http.StatusOK)
	if ct := resp.Header.Get("Content-Type"); ct != "text/html; charset=utf-8" {
		t.Errorf("Content-Type = %q", ct)
	}
	page := string(body)
	for _, want := range []string{
		testMAC, testHostname, "assigned", "test-image",
		`title="` + string(e.image) + `"`, shortID(string(e.image)),
		"76 B", // kernel (43 B) + initrd (33 B)
	} {
		if !strings.Contains(page, want) {
			t.Errorf("page does not contain %q:\n%s", want, page)
		}
	}
	for _, bad := range []string{"No machines registered yet", "http://", "https://"} {
		if strings.Contains(page, bad) {
			t.Errorf("page contains %q (no empty state with machines; no external assets):\n%s", bad, page)
		}
	}
}

func TestInventoryPageEmpty(t *testing.T) {
	e := newEnv(t)
	resp, body := e.get("/")
	wantStatus(t, resp, body, http.StatusOK)
	for _, want := range []string{"No machines registered yet", "kiln machines add"} {
		if !strings.Contains(string(body), want) {
			t.Errorf("empty page does not contain %q:\n%s", want, body)
		}
	}
}

func TestInventoryPageEscapes(t *testing.T) {
	e := newEnv(t)
	hostile := e.man
	hostile.Name = `<script>alert("x")</script>`
	e.addMachine(testMAC, testHostname, e.publish(hostile))
	resp, body := e.get("/")
	wantStatus(t, resp, body, http.StatusOK)
	if strings.Contains(string(body), "<script>") {
		t.Errorf("page has an unescaped image name:\n%s", body)
	}
	if !strings.Contains(string(body), "&lt;script&gt;") {
		t.Errorf("page does not show the escaped image name:\n%s", body)
	}
}

func TestHumanSize(t *testing.T) {
	for n, want := range map[int64]string{
		0: "0 B", 1023: "1023 B", 1024: "1.0 KiB", 14 << 20: "14.0 MiB", 3 << 30: "3.0 GiB",
	} {
		if got := humanSize(n); got != want {
			t.Errorf("humanSize(%d) = %q, want %q", n, got, want)
		}
	}
}

func TestBootSummary(t *testing.T) {
	t0 := time.Date(2026, 11, 26, 4, 0, 0, 0, time.UTC)
	at := func(kind fleet.EventKind, ms float64) fleet.Event {
		return fleet.Event{Kind: kind, Time: t0.Add(time.Duration(ms * float64(time.Millisecond)))}
	}
	for _, tc := range []struct {
		name   string
		events []fleet.Event
		want   string
		steps  string
	}{
		{"none", nil, "not booted", ""},
		{"booting", []fleet.Event{at(fleet.EventOffered, 0), {Kind: fleet.EventFirstHop, Time: t0.Add(120 * time.Millisecond), Detail: "tftp undionly.kpxe"}},
			"booting: firsthop at +120 ms", "+0.0 ms offered\n+120 ms firsthop (tftp undionly.kpxe)"},
		{"ready", []fleet.Event{at(fleet.EventOffered, 0), at(fleet.EventScript, 0.25), at(fleet.EventReady, 41234)},
			"ready in 41.2 s", "+0.0 ms offered\n+0.2 ms script\n+41.2 s ready"},
		{"failed", []fleet.Event{at(fleet.EventScript, 0), at(fleet.EventFailed, 3000)}, "failed after 3.0 s", "+0.0 ms script\n+3.0 s failed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tl := fleet.LatestBoot(tc.events)
			if got := bootSummary(tl); got != tc.want {
				t.Errorf("bootSummary() = %q, want %q", got, tc.want)
			}
			if got := bootSteps(tl); got != tc.steps {
				t.Errorf("bootSteps() = %q, want %q", got, tc.steps)
			}
		})
	}
}
