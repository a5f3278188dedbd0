package web

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"

	"github.com/gorilla/mux"

	"github.com/kiln-dev/kiln/images"
)

// DefaultMaxBlobSize is the largest blob PUT /api/v1/blobs accepts when
// Config.MaxBlobSize is zero.
const DefaultMaxBlobSize = 64 << 30

// blobJSON is the reply of PUT /api/v1/blobs/{digest}.
type blobJSON struct {
	Digest images.Digest `json:"digest"`
	Size   int64         `json:"size"`
}

// headBlob serves HEAD /api/v1/blobs/{digest}: 200 with the blob's
// Content-Length if the store has it, 404 if not. kiln push asks it before
// uploading.
func (s *Server) headBlob(w http.ResponseWriter, r *http.Request) error {
	d, err := images.ParseDigest(mux.Vars(r)["digest"])
	if err != nil {
		return badRequest(err)
	}
	size, err := s.images.BlobSize(d)
	if err != nil {
		return err
	}
	h := w.Header()
	h.Set("Content-Type", "application/octet-stream")
	h.Set("Content-Length", strconv.FormatInt(size, 10))
	h.Set("ETag", `"`+string(d)+`"`)
	w.WriteHeader(http.StatusOK)
	return nil
}

// putBlob serves PUT /api/v1/blobs/{digest}: the body is streamed into a new
// blob whose sha256 (and size, if Content-Length was sent) must match before
// it is committed; on any mismatch or error nothing becomes visible. 201 if
// the blob was stored, 200 without reading the body if the store already
// had it (a client that sent Expect: 100-continue never sends it).
func (s *Server) putBlob(w http.ResponseWriter, r *http.Request) error {
	d, err := images.ParseDigest(mux.Vars(r)["digest"])
	if err != nil {
		return badRequest(err)
	}
	if size, err := s.images.BlobSize(d); err == nil {
		return writeJSON(w, http.StatusOK, blobJSON{Digest: d, Size: size})
	} else if !errors.Is(err, images.ErrNotFound) {
		return err
	}
	if r.ContentLength > s.maxBlob {
		return HTTPError{Code: http.StatusRequestEntityTooLarge, Msg: fmt.Sprintf("blob of %d bytes is larger than the server's limit of %s", r.ContentLength, sizeLimit(s.maxBlob))}
	}
	bw, err := s.images.NewBlob()
	if err != nil {
		return err
	}
	defer bw.Abort() // after Commit, does nothing
	dst := &errWriter{w: bw}
	n, err := io.Copy(dst, http.MaxBytesReader(w, r.Body, s.maxBlob))
	var tooBig *http.MaxBytesError
	switch {
	case dst.err != nil:
		return fmt.Errorf("storing blob %s: %w", d, dst.err)
	case errors.As(err, &tooBig):
		return err
	case err != nil:
		return HTTPError{Code: http.StatusBadRequest, Msg: fmt.Sprintf("reading blob %s after %d bytes: %v", d, n, err), Err: err}
	case r.ContentLength >= 0 && n != r.ContentLength:
		return HTTPError{Code: http.StatusBadRequest, Msg: fmt.Sprintf("blob %s: received %d bytes, Content-Length said %d", d, n, r.ContentLength)}
	}
	if got := bw.Digest(); got != d {
		return HTTPError{Code: http.StatusBadRequest, Msg: fmt.Sprintf("digest mismatch: got %s, want %s (%d bytes received)", got, d, n)}
	}
	a, err := bw.Commit()
	if err != nil {
		return err
	}
	s.log.Info("blob uploaded", "blob", a.Digest, "size", a.Size, "remote", r.RemoteAddr)
	w.Header().Set("Location", "/blobs/"+string(d))
	return writeJSON(w, http.StatusCreated, blobJSON{Digest: a.Digest, Size: a.Size})
}

// errWriter remembers the first error of its writer, so that a failure to
// store can be told from a failure to receive.
type errWriter struct {
	w   io.Writer
	err error
}

func (e *errWriter) Write(p []byte) (int, error) {
	n, err := e.w.Write(p)
	if err != nil && e.err == nil {
		e.err = err
	}
	return n, err
}

// putImage serves PUT /api/v1/images/{id}: the body is a manifest exactly as
// another store holds it. Its sha256 must be {id}; it must decode strictly,
// be valid and be in canonical form (so that the ID the server computes is
// {id}); every artifact must already be stored with its size (else 409).
// 201 if the image was published, 200 if it already was.
func (s *Server) putImage(w http.ResponseWriter, r *http.Request) error {
	id, err := images.ParseDigest(mux.Vars(r)["id"])
	if err != nil {
		return badRequest(fmt.Errorf("image id: %w", err))
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
	var tooBig *http.MaxBytesError
	if errors.As(err, &tooBig) {
		return err
	} else if err != nil {
		return HTTPError{Code: http.StatusBadRequest, Msg: "reading manifest: " + err.Error(), Err: err}
	}
	if got := images.DigestOf(body); got != id {
		return HTTPError{Code: http.StatusBadRequest, Msg: fmt.Sprintf("manifest digest mismatch: the body hashes to %s, not to the image ID %s in the URL", got, id)}
	}
	var m images.Manifest
	if err := decodeStrict(bytes.NewReader(body), &m); err != nil {
		return err
	}
	if err := m.Validate(); err != nil {
		return badRequest(err)
	}
	canon, err := m.Canonical()
	if err != nil {
		return err
	}
	if !bytes.Equal(canon, body) {
		return HTTPError{Code: http.StatusBadRequest, Msg: fmt.Sprintf(
			"manifest is not in kiln's canonical encoding: re-encoded it is image %s, not %s; send the manifest file's bytes unchanged",
			images.DigestOf(canon), id)}
	}
	_, statErr := s.images.Stat(id)
	existed := statErr == nil
	got, err := s.images.Publish(m)
	if err != nil {
		return err
	}
	if got != id {
		return fmt.Errorf("publishing %s: the store computed ID %s", id, got)
	}
	img, err := s.images.Stat(id)
	if err != nil {
		return err
	}
	w.Header().Set("Location", "/api/v1/images/"+string(id))
	if existed {
		return writeJSON(w, http.StatusOK, toImageJSON(img))
	}
	s.log.Info("image published", "image", id, "name", m.Name, "remote", r.RemoteAddr)
	return writeJSON(w, http.StatusCreated, toImageJSON(img))
}

// sizeLimit formats a byte limit in the largest binary unit that divides
// it: "64 KiB", "64 GiB", "1000 bytes".
func sizeLimit(n int64) string {
	for _, u := range []struct {
		shift uint
		name  string
	}{{40, "TiB"}, {30, "GiB"}, {20, "MiB"}, {10, "KiB"}} {
		if n >= 1<<u.shift && n%(1<<u.shift) == 0 {
			return fmt.Sprintf("%d %s", n>>u.shift, u.name)
		}
	}
	return fmt.Sprintf("%d bytes", n)
}
