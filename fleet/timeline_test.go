package fleet

import (
	"strconv"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

var t0 = time.Date(2026, 11, 26, 4, 0, 0, 0, time.UTC)

// ev is an event at ms milliseconds after t0.
func ev(kind EventKind, ms float64, detail ...string) Event {
	e := Event{Kind: kind, Time: t0.Add(time.Duration(ms * float64(time.Millisecond)))}
	if len(detail) > 0 {
		e.Detail = detail[0]
	}
	return e
}

// kindAt is the kind and offset of one step.
type kindAt struct {
	Kind EventKind
	MS   float64
}

func stepsOf(tl Timeline) []kindAt {
	out := []kindAt{}
	for _, s := range tl.Steps {
		out = append(out, kindAt{s.Kind, s.OffsetMS})
	}
	return out
}

func TestLatestBoot(t *testing.T) {
	// A BIOS PXE boot: the firmware's DHCP, undionly.kpxe over TFTP,
	// iPXE's DHCP, the script and artifacts, the kernel's DHCP, identity
	// and phone-home.
	biosBoot := func(at float64) []Event {
		return []Event{
			ev(EventOffered, at), ev(EventAcked, at+4.5), ev(EventFirstHop, at+120, "tftp undionly.kpxe"),
			ev(EventOffered, at+900), ev(EventAcked, at+905), ev(EventScript, at+1000),
			ev(EventKernel, at+1100), ev(EventInitrd, at+1500),
			ev(EventOffered, at+5000), ev(EventAcked, at+5003), ev(EventRoot, at+6000),
			ev(EventIdentity, at+7000), ev(EventReady, at+9000, "sha256:a"),
		}
	}
	biosSteps := []kindAt{
		{EventOffered, 0}, {EventAcked, 4.5}, {EventFirstHop, 120}, {EventOffered, 900}, {EventAcked, 905},
		{EventScript, 1000}, {EventKernel, 1100}, {EventInitrd, 1500}, {EventOffered, 5000}, {EventAcked, 5003},
		{EventRoot, 6000}, {EventIdentity, 7000}, {EventReady, 9000},
	}
	cat := func(parts ...[]Event) []Event {
		var out []Event
		for _, p := range parts {
			out = append(out, p...)
		}
		return out
	}
	assigned := []Event{ev(EventAssigned, -60000, "sha256:a")}

	for _, tc := range []struct {
		name     string
		events   []Event
		outcome  string
		start    float64 // ms after t0
		duration float64
		steps    []kindAt
	}{
		{"no events", nil, BootNone, 0, 0, []kindAt{}},
		{"only assigned", assigned, BootNone, 0, 0, []kindAt{}},
		{"bios boot to ready", cat(assigned, biosBoot(0)), BootReady, 0, 9000, biosSteps},
		{
			"lease renewals after ready are not a boot",
			cat(assigned, biosBoot(0), []Event{ev(EventAcked, 1.8e6), ev(EventAcked, 3.6e6)}),
			BootReady, 0, 9000, biosSteps,
		},
		{
			"a blob fetched again after ready is not a boot",
			cat(biosBoot(0), []Event{ev(EventKernel, 20000)}),
			BootReady, 0, 9000, biosSteps,
		},
		{
			"reboot after ready: the latest boot, in progress",
			cat(assigned, biosBoot(0), []Event{
				ev(EventAcked, 1.8e6), ev(EventOffered, 4e6), ev(EventAcked, 4e6+3), ev(EventFirstHop, 4e6+100),
			}),
			BootBooting, 4e6, 100, []kindAt{{EventOffered, 0}, {EventAcked, 3}, {EventFirstHop, 100}},
		},
		{
			"second full boot",
			cat(assigned, biosBoot(0), biosBoot(1e6)),
			BootReady, 1e6, 9000, biosSteps,
		},
		{
			"failed boot",
			[]Event{ev(EventOffered, 0), ev(EventAcked, 1), ev(EventScript, 50), ev(EventFailed, 3000, "booted image sha256:b, assigned sha256:a")},
			BootFailed, 0, 3000, []kindAt{{EventOffered, 0}, {EventAcked, 1}, {EventScript, 50}, {EventFailed, 3000}},
		},
		{
			"proxyDHCP: no DHCP events, the script starts each boot",
			[]Event{
				ev(EventScript, 0), ev(EventKernel, 10), ev(EventIdentity, 900), ev(EventFailed, 1000),
				ev(EventScript, 5000), ev(EventKernel, 5020),
			},
			BootBooting, 5000, 20, []kindAt{{EventScript, 0}, {EventKernel, 20}},
		},
		{
			"hung boot power-cycled: the new attempt starts at its DHCP",
			[]Event{
				ev(EventOffered, 0), ev(EventAcked, 2), ev(EventFirstHop, 100), ev(EventOffered, 800), ev(EventAcked, 802),
				ev(EventScript, 900), ev(EventKernel, 1000), // hangs in the kernel
				ev(EventOffered, 60000), ev(EventAcked, 60002), ev(EventFirstHop, 60100),
				ev(EventOffered, 60800), ev(EventAcked, 60802), ev(EventScript, 60900),
			},
			BootBooting, 60000, 900, []kindAt{
				{EventOffered, 0}, {EventAcked, 2}, {EventFirstHop, 100}, {EventOffered, 800}, {EventAcked, 802}, {EventScript, 900},
			},
		},
		{
			"hung boot restarted by a second script without DHCP",
			[]Event{ev(EventScript, 0), ev(EventKernel, 10), ev(EventScript, 7000)},
			BootBooting, 7000, 0, []kindAt{{EventScript, 0}},
		},
		{
			"uefi http boot of a uki",
			[]Event{
				ev(EventOffered, 0), ev(EventAcked, 3), ev(EventFirstHop, 50, "httpboot uki"), ev(EventScript, 50, "httpboot uki"),
				ev(EventKernel, 50), ev(EventInitrd, 50), ev(EventOffered, 4000), ev(EventAcked, 4001),
				ev(EventIdentity, 5000), ev(EventReady, 6000.25),
			},
			BootReady, 0, 6000.25, []kindAt{
				{EventOffered, 0}, {EventAcked, 3}, {EventFirstHop, 50}, {EventScript, 50}, {EventKernel, 50}, {EventInitrd, 50},
				{EventOffered, 4000}, {EventAcked, 4001}, {EventIdentity, 5000}, {EventReady, 6000.25},
			},
		},
		{
			"firmware fetches the first hop twice (size probe, then the file)",
			[]Event{ev(EventOffered, 0), ev(EventAcked, 1), ev(EventFirstHop, 10), ev(EventFirstHop, 20), ev(EventScript, 900)},
			BootBooting, 0, 900, []kindAt{{EventOffered, 0}, {EventAcked, 1}, {EventFirstHop, 10}, {EventFirstHop, 20}, {EventScript, 900}},
		},
		{
			"history cut at maxEvents in the middle of a boot",
			[]Event{ev(EventAcked, 0), ev(EventKernel, 10), ev(EventInitrd, 20)},
			BootBooting, 0, 20, []kindAt{{EventAcked, 0}, {EventKernel, 10}, {EventInitrd, 20}},
		},
		{
			"history cut right after a phone-home: renewals only",
			[]Event{ev(EventReady, 0), ev(EventAcked, 1.8e6), ev(EventAcked, 3.6e6)},
			BootNone, 0, 0, []kindAt{},
		},
		{
			"sub-millisecond offsets keep microseconds",
			[]Event{ev(EventOffered, 0), ev(EventAcked, 0.4127)},
			BootBooting, 0, 0.413, []kindAt{{EventOffered, 0}, {EventAcked, 0.413}},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tl := LatestBoot(tc.events)
			if tl.Outcome != tc.outcome {
				t.Errorf("LatestBoot().Outcome = %q, want %q", tl.Outcome, tc.outcome)
			}
			if diff := cmp.Diff(tc.steps, stepsOf(tl)); diff != "" {
				t.Errorf("LatestBoot() steps (-want +got):\n%s", diff)
			}
			if tl.Steps == nil {
				t.Error("LatestBoot().Steps is nil, want a non-nil slice (JSON [])")
			}
			if tc.outcome == BootNone {
				if !tl.Start.IsZero() || !tl.End.IsZero() || tl.DurationMS != 0 {
					t.Errorf("no boot: start %v end %v duration %v, want zero", tl.Start, tl.End, tl.DurationMS)
				}
				return
			}
			if want := t0.Add(time.Duration(tc.start * float64(time.Millisecond))); !tl.Start.Equal(want) {
				t.Errorf("LatestBoot().Start = %v, want %v", tl.Start, want)
			}
			if tl.DurationMS != tc.duration {
				t.Errorf("LatestBoot().DurationMS = %v, want %v", tl.DurationMS, tc.duration)
			}
			if last := tl.Steps[len(tl.Steps)-1]; !tl.End.Equal(last.Time) {
				t.Errorf("LatestBoot().End = %v, want the last step's time %v", tl.End, last.Time)
			}
		})
	}
}

// TestLatestBootDetail checks that steps carry each event's time and detail.
func TestLatestBootDetail(t *testing.T) {
	events := []Event{ev(EventOffered, 0, "10.0.0.9"), ev(EventFirstHop, 12.5, "tftp snponly.efi")}
	want := []Step{
		{Kind: EventOffered, Time: events[0].Time, Detail: "10.0.0.9", OffsetMS: 0},
		{Kind: EventFirstHop, Time: events[1].Time, Detail: "tftp snponly.efi", OffsetMS: 12.5},
	}
	if diff := cmp.Diff(want, LatestBoot(events).Steps); diff != "" {
		t.Errorf("LatestBoot() steps (-want +got):\n%s", diff)
	}
}

// FuzzLatestBoot derives timelines from arbitrary event histories and
// checks their invariants: the steps are a contiguous run of the history
// (assigned left out), in time order, offset from the first step, ending
// at the outcome's event.
func FuzzLatestBoot(f *testing.F) {
	kinds := []EventKind{
		EventAssigned, EventOffered, EventAcked, EventFirstHop, EventScript, EventKernel,
		EventInitrd, EventRoot, EventIdentity, EventReady, EventFailed,
		EventDiscovered, EventGeneration, EventInstalling, EventInstalled, EventDiskBoot, EventRetired,
	}
	f.Add([]byte{0, 1, 2, 3, 1, 2, 4, 5, 6, 1, 2, 7, 8, 9, 2, 2})
	f.Add([]byte{4, 5, 4, 10, 4, 5, 6, 1, 2, 3})
	f.Add([]byte{9, 2, 2, 1})
	f.Fuzz(func(t *testing.T, data []byte) {
		var events []Event
		at := t0
		for i, b := range data {
			// The low nibble picks the kind, the high one how long since
			// the last event (0 to 15 s, so that equal times occur).
			at = at.Add(time.Duration(b>>4) * time.Second)
			// The detail is the event's index, unique, so that the
			// check below finds the run of steps in the history.
			events = append(events, Event{Kind: kinds[int(b&0x0f)%len(kinds)], Time: at, Detail: strconv.Itoa(i)})
		}
		tl := LatestBoot(events)
		if tl.Steps == nil {
			t.Fatal("Steps is nil")
		}
		if tl.Outcome == BootNone {
			if len(tl.Steps) != 0 {
				t.Fatalf("outcome none with steps %v", tl.Steps)
			}
			return
		}
		if len(tl.Steps) == 0 {
			t.Fatalf("outcome %s without steps", tl.Outcome)
		}
		// The steps are events[i:j] without the record's own events
		// (assigned, discovered, generation, retired).
		var rest []Event
		for _, e := range events {
			if bootStep(e.Kind) {
				rest = append(rest, e)
			}
		}
		first := -1
		for i, e := range rest {
			if e.Detail == tl.Steps[0].Detail && e.Time.Equal(tl.Steps[0].Time) && e.Kind == tl.Steps[0].Kind {
				first = i
				break
			}
		}
		if first < 0 || first+len(tl.Steps) > len(rest) {
			t.Fatalf("steps %v are not a run of the history %v", tl.Steps, rest)
		}
		for i, s := range tl.Steps {
			e := rest[first+i]
			if s.Kind != e.Kind || !s.Time.Equal(e.Time) || s.Detail != e.Detail {
				t.Fatalf("step %d = %+v, want event %+v", i, s, e)
			}
			if want := millis(s.Time.Sub(tl.Start)); s.OffsetMS != want || s.OffsetMS < 0 {
				t.Fatalf("step %d offset %v, want %v", i, s.OffsetMS, want)
			}
		}
		last := tl.Steps[len(tl.Steps)-1]
		switch tl.Outcome {
		case BootReady, BootFailed:
			if string(last.Kind) != tl.Outcome {
				t.Fatalf("outcome %s ends with %s", tl.Outcome, last.Kind)
			}
		case BootBooting:
			if first+len(tl.Steps) != len(rest) {
				t.Fatalf("a boot in progress does not run to the last event: %v of %v", tl.Steps, rest)
			}
		default:
			t.Fatalf("unknown outcome %q", tl.Outcome)
		}
		for _, s := range tl.Steps[:len(tl.Steps)-1] {
			if s.Kind == EventReady || s.Kind == EventFailed {
				t.Fatalf("a %s step before the end: %v", s.Kind, tl.Steps)
			}
		}
		if !tl.Start.Equal(tl.Steps[0].Time) || !tl.End.Equal(last.Time) || tl.DurationMS != last.OffsetMS {
			t.Fatalf("start %v end %v duration %v do not match the steps %v", tl.Start, tl.End, tl.DurationMS, tl.Steps)
		}
	})
}

func TestTrimEvents(t *testing.T) {
	// One letter per event kind.
	letters := map[EventKind]byte{
		EventAssigned: 'A', EventOffered: 'o', EventAcked: 'a', EventFirstHop: 'f', EventScript: 's',
		EventKernel: 'k', EventInitrd: 'i', EventIdentity: 'd', EventReady: 'R', EventFailed: 'F',
	}
	parse := func(s string) []Event {
		var out []Event
		for i := range len(s) {
			for k, c := range letters {
				if c == s[i] {
					out = append(out, ev(k, float64(i)))
				}
			}
		}
		return out
	}
	format := func(events []Event) string {
		var b []byte
		for _, e := range events {
			b = append(b, letters[e.Kind])
		}
		return string(b)
	}
	for _, tc := range []struct {
		name, in  string
		max       int
		want      string
		keepsBoot bool // the latest boot fits and must survive whole
	}{
		{"under the cap", "Aoafski", 10, "Aoafski", true},
		{"at the cap", "Aoafski", 7, "Aoafski", true},
		{"older boots go first", "AoasRoasFoasR", 5, "FoasR", true},
		{"then renewals after the boot, oldest first", "AoasdRaaaaa", 7, "oasdRaa", true},
		{"a boot in progress keeps its newest events", "Aoafoaskik", 4, "skik", false},
		{"no boot at all", "AAAA", 2, "AA", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := parse(tc.in)
			got := trimEvents(in, tc.max)
			if format(got) != tc.want {
				t.Errorf("trimEvents(%s, %d) = %s, want %s", tc.in, tc.max, format(got), tc.want)
			}
			if before, after := LatestBoot(in), LatestBoot(got); tc.keepsBoot && !cmp.Equal(before, after) {
				t.Errorf("trimming changed the latest boot:\n%+v\n%+v", before, after)
			}
		})
	}
}

// TestTimelineSurvivesRenewals renews the lease of a ready machine more
// often than the event cap allows, and checks that its boot is still shown.
func TestTimelineSurvivesRenewals(t *testing.T) {
	f := newTestFleet(t)
	mac := "52:54:00:00:00:01"
	f.Add(NewMachine{MAC: mac, Hostname: "n1", Image: "sha256:a"})
	for _, k := range []EventKind{EventOffered, EventAcked, EventFirstHop, EventScript, EventKernel, EventInitrd, EventIdentity} {
		if _, err := f.Observe(mac, k, "10.0.0.9"); err != nil {
			t.Fatal(err)
		}
	}
	m, err := f.Report(mac, "sha256:a")
	if err != nil {
		t.Fatal(err)
	}
	want := m.Timeline()
	for range maxEvents + 50 {
		if m, err = f.Observe(mac, EventAcked, "10.0.0.9"); err != nil {
			t.Fatal(err)
		}
	}
	if len(m.Events) != maxEvents {
		t.Errorf("have %d events, want the cap %d", len(m.Events), maxEvents)
	}
	if diff := cmp.Diff(want, m.Timeline()); diff != "" {
		t.Errorf("timeline after %d renewals (-before +after):\n%s", maxEvents+50, diff)
	}
}
