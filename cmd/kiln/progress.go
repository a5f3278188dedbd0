package main

import (
	"fmt"
	"io"
	"os"

	"github.com/vbauerster/mpb/v8"
	"github.com/vbauerster/mpb/v8/decor"
)

// buildProgress shows a build's stages: a progress bar per stage on a
// terminal (github.com/vbauerster/mpb), one plain line per stage otherwise,
// so CI logs stay readable; nothing with --json.
type buildProgress struct {
	w    io.Writer
	p    *mpb.Progress // nil: plain lines
	bar  *mpb.Bar
	last string
	// ended is the last stage whose end was printed (plain lines only).
	ended string
}

// newBuildProgress returns the progress display for w; quiet shows
// nothing.
func newBuildProgress(w io.Writer, quiet bool) *buildProgress {
	if quiet {
		return nil
	}
	bp := &buildProgress{w: w}
	if isTerminal(w) {
		bp.p = mpb.New(mpb.WithOutput(w), mpb.WithWidth(40))
	}
	return bp
}

// isTerminal reports whether w is a character device such as a terminal.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// update is builder.Options.Progress.
func (bp *buildProgress) update(stage string, done, total int64) {
	if bp == nil {
		return
	}
	if bp.p == nil {
		bp.line(stage, done, total)
		return
	}
	if stage != bp.last {
		bp.finish()
		bp.last = stage
		name := decor.Name(fmt.Sprintf("%-9s", stage))
		if total > 0 {
			bp.bar = bp.p.AddBar(total, mpb.PrependDecorators(name, decor.CountersKibiByte("% .1f / % .1f")),
				mpb.AppendDecorators(decor.Percentage()))
		} else {
			bp.bar = bp.p.AddSpinner(0, mpb.PrependDecorators(name, decor.CurrentNoUnit("%d")))
		}
	}
	if total > 0 {
		bp.bar.SetTotal(total, false)
	}
	bp.bar.SetCurrent(done)
}

// line prints a line when a stage starts and when a stage with a known
// total ends; updates of a stage that ended are ignored.
func (bp *buildProgress) line(stage string, done, total int64) {
	if stage == bp.ended {
		return
	}
	if stage != bp.last {
		bp.last = stage
		fmt.Fprintf(bp.w, "%s...\n", stage)
	}
	if total > 0 && done >= total {
		fmt.Fprintf(bp.w, "%s: done (%s)\n", stage, humanBytes(done))
		bp.ended = stage
	}
}

func (bp *buildProgress) finish() {
	if bp.bar != nil {
		bp.bar.SetTotal(-1, true) // complete at its current count
		bp.bar = nil
	}
}

// close completes the last bar and waits for the display to settle.
func (bp *buildProgress) close() {
	if bp == nil || bp.p == nil {
		return
	}
	bp.finish()
	bp.p.Wait()
}
