package web

import (
	"net/http"
	"time"

	"github.com/gorilla/mux"

	"github.com/kiln-dev/kiln/fleet"
	"github.com/kiln-dev/kiln/images"
)

// blob serves GET and HEAD /blobs/{digest}: one artifact of the image store,
// with Range, conditional requests and sendfile from http.ServeContent. A
// blob never changes, so its digest is its ETag and it may be cached forever.
func (s *Server) blob(w http.ResponseWriter, r *http.Request) error {
	d, err := images.ParseDigest(mux.Vars(r)["digest"])
	if err != nil {
		return badRequest(err)
	}
	f, err := s.images.OpenBlob(d)
	if err != nil {
		return err
	}
	defer f.Close()
	h := w.Header()
	h.Set("Content-Type", "application/octet-stream")
	h.Set("ETag", `"`+string(d)+`"`)
	h.Set("Cache-Control", "public, max-age=31536000, immutable")
	http.ServeContent(w, r, "", time.Time{}, f)
	if r.Method == http.MethodGet {
		s.recordFetch(r, d)
	}
	return nil
}

// recordFetch records that the machine named by the mac query parameter
// fetched a boot artifact of its image: the kernel, an initrd, the squashfs
// root or the UKI. Anything else (no or an
// unknown MAC, another artifact) is logged at Debug and otherwise ignored:
// the blob was served either way.
func (s *Server) recordFetch(r *http.Request, d images.Digest) {
	mac := r.URL.Query().Get("mac")
	if mac == "" {
		return
	}
	log := s.log.With("mac", mac, "blob", d)
	m, err := s.fleet.Get(mac)
	if err != nil {
		log.Debug("blob fetch not recorded", "err", err)
		return
	}
	log = log.With("mac", m.MAC, "image", m.Image)
	man, err := s.manifest(m.Image)
	if err != nil {
		log.Debug("blob fetch not recorded", "err", err)
		return
	}
	var kind fleet.EventKind
	switch {
	case isArtifact(man, "kernel", d):
		kind = fleet.EventKernel
	case isArtifact(man, "initrd", d), isArtifact(man, "stage1", d):
		kind = fleet.EventInitrd
	case isArtifact(man, "squashfs", d):
		kind = fleet.EventRoot
	case isArtifact(man, "uki", d):
		kind = fleet.EventKernel
	default:
		log.Debug("blob fetch not recorded: not a boot artifact of the machine's image")
		return
	}
	if _, err := s.fleet.Observe(m.MAC, kind, string(d)); err != nil {
		log.Debug("blob fetch not recorded", "err", err)
		return
	}
	log.Info("boot artifact fetched", "artifact", kind)
}

func isArtifact(m images.Manifest, name string, d images.Digest) bool {
	a, ok := m.Artifact(name)
	return ok && a.Digest == d
}
