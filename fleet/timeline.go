package fleet

import (
	"math"
	"time"
)

// Boot outcomes of a Timeline.
const (
	BootNone    = "none"    // no boot recorded
	BootBooting = "booting" // started, no phone-home yet
	BootReady   = "ready"   // ended with a phone-home of the assigned image
	BootFailed  = "failed"  // ended with a phone-home of another image
)

// Timeline is the course of one boot of a machine, from its first DHCP
// event to its phone-home. It is derived from the machine's events, never
// stored.
type Timeline struct {
	// Outcome is one of BootNone, BootBooting, BootReady, BootFailed.
	Outcome string `json:"outcome"`
	// Start is the time of the first step, which offsets count from.
	Start time.Time `json:"start,omitzero"`
	// End is the time of the last step: the phone-home once there is one.
	End time.Time `json:"end,omitzero"`
	// DurationMS is End - Start in milliseconds.
	DurationMS float64 `json:"duration_ms"`
	// Steps are the boot's events in order; never nil.
	Steps []Step `json:"steps"`
}

// Step is one event of a boot.
type Step struct {
	Kind   EventKind `json:"kind"`
	Time   time.Time `json:"time"`
	Detail string    `json:"detail,omitempty"`
	// OffsetMS is the time since the boot's first step in milliseconds,
	// to the microsecond.
	OffsetMS float64 `json:"offset_ms"`
}

// Timeline returns the timeline of the machine's latest boot.
func (m Machine) Timeline() Timeline { return LatestBoot(m.Events) }

// LatestBoot returns the timeline of the latest boot in events (oldest
// first). Its steps are the events of that boot, from its start up to and
// including its ready or failed event.
//
// A boot starts at the first offered, firsthop or script event that follows
// a ready or failed event; the first event of the history starts one too,
// unless it is a ready or failed. Events after a ready or failed that
// start nothing (lease renewals, a blob fetched again) belong to no boot.
// A DHCP exchange in the middle of a boot (iPXE's own after the
// firmware's, the kernel's after iPXE's) does not start a new one; but a
// firsthop or script after the boot's script means the machine started
// over without phoning home (a hung boot, a power cycle): the new boot
// starts there, or at the DHCP events just before it.
func LatestBoot(events []Event) Timeline {
	tl := Timeline{Outcome: BootNone, Steps: []Step{}}
	start, last, ended := bootRange(events)
	if start < 0 {
		return tl
	}
	tl.Outcome = BootBooting
	if ended {
		tl.Outcome = BootReady
		if events[last].Kind == EventFailed {
			tl.Outcome = BootFailed
		}
	}
	tl.Start = events[start].Time
	for _, e := range events[start : last+1] {
		if !bootStep(e.Kind) {
			continue
		}
		tl.Steps = append(tl.Steps, Step{Kind: e.Kind, Time: e.Time, Detail: e.Detail, OffsetMS: millis(e.Time.Sub(tl.Start))})
		tl.End = e.Time
	}
	tl.DurationMS = millis(tl.End.Sub(tl.Start))
	return tl
}

// bootRange returns the latest boot in events as events[start:last+1],
// and whether it ended (its last event is a ready or failed); start is -1
// if there is none. See LatestBoot for the rules.
func bootRange(events []Event) (start, last int, ended bool) {
	start, end := -1, -1 // end is -1 while booting
	terminal := true     // no boot in progress
	script := false      // the boot in progress has served its script
	dhcpRun := -1        // first index of the latest run of offered/acked events
	first := true        // no boot event seen yet
	for i, e := range events {
		dhcp := e.Kind == EventOffered || e.Kind == EventAcked
		switch {
		case !bootStep(e.Kind):
		case terminal && (e.Kind == EventOffered || e.Kind == EventFirstHop || e.Kind == EventScript ||
			first && e.Kind != EventReady && e.Kind != EventFailed):
			start, end, terminal, script = i, -1, false, e.Kind == EventScript
		case terminal:
			// After the boot ended: renewals and stray fetches.
		case e.Kind == EventReady || e.Kind == EventFailed:
			end, terminal = i, true
		case script && (e.Kind == EventFirstHop || e.Kind == EventScript):
			start, script = i, e.Kind == EventScript
			if dhcpRun >= 0 {
				start = dhcpRun
			}
		case e.Kind == EventScript:
			script = true
		}
		if bootStep(e.Kind) {
			first = false
		}
		switch {
		case !dhcp:
			dhcpRun = -1
		case dhcpRun < 0:
			dhcpRun = i
		}
	}
	switch {
	case start < 0:
		return -1, -1, false
	case end < 0:
		return start, len(events) - 1, false
	}
	return start, end, true
}

// bootStep reports whether events of kind are steps of a boot: not the
// record's own (assigned, discovered, generation, retired), which the
// timeline skips.
func bootStep(kind EventKind) bool {
	switch kind {
	case EventAssigned, EventDiscovered, EventGeneration, EventRetired:
		return false
	}
	return true
}

// trimEvents returns events cut to at most max, dropping the oldest events
// outside the latest boot first, then the oldest after it (lease renewals
// of a machine that stays up for weeks), and only then the oldest of the
// boot itself, so that the timeline of the latest boot survives.
func trimEvents(events []Event, max int) []Event {
	drop := len(events) - max
	if drop <= 0 {
		return events
	}
	start, last, _ := bootRange(events)
	if start < 0 {
		start, last = len(events), len(events)-1
	}
	gone := make([]bool, len(events))
	mark := func(from, to int) { // drops the oldest of events[from:to]
		for i := from; i < to && drop > 0; i++ {
			gone[i] = true
			drop--
		}
	}
	mark(0, start)
	mark(last+1, len(events))
	mark(start, last+1)
	out := make([]Event, 0, max)
	for i, e := range events {
		if !gone[i] {
			out = append(out, e)
		}
	}
	return out
}

// millis returns d in milliseconds, rounded to the microsecond.
func millis(d time.Duration) float64 {
	return math.Round(float64(d)/float64(time.Microsecond)) / 1000
}
