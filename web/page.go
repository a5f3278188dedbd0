package web

import (
	"bytes"
	"embed"
	"fmt"
	"html/template"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/kiln-dev/kiln/fleet"
	"github.com/kiln-dev/kiln/images"
)

//go:embed templates/index.html
var templates embed.FS

func parsePage() (*template.Template, error) {
	t, err := template.New("index.html").Funcs(template.FuncMap{
		"shortID":        shortID,
		"humanSize":      humanSize,
		"when":           when,
		"bootSummary":    bootSummary,
		"generation":     generationSummary,
		"reimagePending": reimagePending,
		"bootSteps":      bootSteps,
	}).ParseFS(templates, "templates/index.html")
	if err != nil {
		return nil, fmt.Errorf("web: parsing page template: %w", err)
	}
	return t, nil
}

// pageData is what the inventory page shows.
type pageData struct {
	Machines []machineRow
	Images   []images.Image
	Now      time.Time
}

// machineRow is one machine with the name of its image, if it is stored,
// and the timeline of its latest boot.
type machineRow struct {
	fleet.Machine
	ImageName string // empty if the image is not in the store
	Boot      fleet.Timeline
}

// inventory serves GET /: the operator's page of machines and images. It
// loads nothing from outside kiln (the rack has no internet).
func (s *Server) inventory(w http.ResponseWriter, r *http.Request) error {
	ms, err := s.fleet.List()
	if err != nil {
		return err
	}
	imgs, err := s.images.List()
	if err != nil {
		return err
	}
	names := make(map[string]string, len(imgs))
	for _, img := range imgs {
		names[string(img.ID)] = img.Manifest.Name
	}
	data := pageData{Images: imgs, Now: time.Now().UTC()}
	for _, m := range ms {
		data.Machines = append(data.Machines, machineRow{Machine: m, ImageName: names[m.Image], Boot: m.Timeline()})
	}
	var buf bytes.Buffer
	if err := s.page.Execute(&buf, data); err != nil {
		return HTTPError{Code: http.StatusInternalServerError, Msg: "rendering page", Err: err}
	}
	h := w.Header()
	h.Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'")
	h.Set("Cache-Control", "no-store")
	writeBody(w, http.StatusOK, "text/html; charset=utf-8", buf.Bytes())
	return nil
}

// shortID shortens an image ID to "sha256:" and 12 hex digits.
func shortID(id string) string {
	if len(id) > len("sha256:")+12 {
		return id[:len("sha256:")+12]
	}
	return id
}

// humanSize formats n bytes in binary units: "512 B", "13.6 MiB".
func humanSize(n int64) string {
	if n < 1024 {
		return fmt.Sprintf("%d B", n)
	}
	v, unit := float64(n), 0
	for v >= 1024 && unit < 5 {
		v /= 1024
		unit++
	}
	return fmt.Sprintf("%.1f %s", v, [...]string{"B", "KiB", "MiB", "GiB", "TiB", "PiB"}[unit])
}

// when formats t for the page, or "never" for the zero time.
func when(t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	return t.UTC().Format("2006-01-02 15:04:05Z")
}

// bootSummary says in a few words how a machine's latest boot went:
// "ready in 41.2 s", "failed after 3.0 s", "booting: kernel at +1.1 s" or
// "not booted".
func bootSummary(tl fleet.Timeline) string {
	switch tl.Outcome {
	case fleet.BootReady:
		return "ready in " + humanMS(tl.DurationMS)
	case fleet.BootFailed:
		return "failed after " + humanMS(tl.DurationMS)
	case fleet.BootBooting:
		last := tl.Steps[len(tl.Steps)-1]
		return fmt.Sprintf("booting: %s at +%s", last.Kind, humanMS(last.OffsetMS))
	}
	return "not booted"
}

// bootSteps lists the steps of a timeline, one a line, for a tooltip.
func bootSteps(tl fleet.Timeline) string {
	var b strings.Builder
	for i, st := range tl.Steps {
		if i > 0 {
			b.WriteByte('\n')
		}
		fmt.Fprintf(&b, "+%s %s", humanMS(st.OffsetMS), st.Kind)
		if st.Detail != "" {
			fmt.Fprintf(&b, " (%s)", st.Detail)
		}
	}
	return b.String()
}

// humanMS formats a number of milliseconds: "0.4 ms", "120 ms", "41.2 s".
func humanMS(ms float64) string {
	switch {
	case ms < 10:
		return fmt.Sprintf("%.1f ms", ms)
	case ms < 1000:
		return fmt.Sprintf("%.0f ms", ms)
	}
	return fmt.Sprintf("%.1f s", ms/1000)
}

// generationSummary is the inventory's generation cell: the current
// generation, and while the machine has not booted it yet, what it runs.
// A new machine's first generation is not a re-image.
func generationSummary(m fleet.Machine) string {
	g := strconv.Itoa(m.Generation)
	if m.Mode == fleet.Install {
		g += " install"
	}
	if !reimagePending(m) {
		return g
	}
	if m.Running == 0 {
		return g + " (pending)"
	}
	return fmt.Sprintf("%s (pending; runs %d)", g, m.Running)
}

// reimagePending says the machine has a generation it has not booted that
// replaces one before it.
func reimagePending(m fleet.Machine) bool {
	return m.ReimagePending && (m.Running > 0 || m.Generation > 1)
}
