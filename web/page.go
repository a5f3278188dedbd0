package web

import (
	"bytes"
	"embed"
	"fmt"
	"html/template"
	"net/http"
	"time"

	"github.com/kiln-dev/kiln/fleet"
	"github.com/kiln-dev/kiln/images"
)

//go:embed templates/index.html
var templates embed.FS

func parsePage() (*template.Template, error) {
	t, err := template.New("index.html").Funcs(template.FuncMap{
		"shortID":   shortID,
		"humanSize": humanSize,
		"when":      when,
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

// machineRow is one machine with the name of its image, if it is stored.
type machineRow struct {
	fleet.Machine
	ImageName string // empty if the image is not in the store
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
		data.Machines = append(data.Machines, machineRow{Machine: m, ImageName: names[m.Image]})
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
