package oci

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash"
	"io"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
)

// layer is one filesystem layer of an image.
type layer struct {
	name   string  // how errors name it: a digest or archive member
	blob   v1.Hash // digest of the stored blob; zero if unknown
	diffID v1.Hash // digest of the uncompressed tar
	open   func() (io.ReadCloser, error)
}

var (
	gzipMagic = []byte{0x1f, 0x8b}
	zstdMagic = []byte{0x28, 0xb5, 0x2f, 0xfd}
)

// compressed names the compression that magic, a stream's first bytes,
// shows: "gzip", "zstd" or "" for none.
func compressed(magic []byte) string {
	switch {
	case bytes.HasPrefix(magic, gzipMagic):
		return "gzip"
	case bytes.HasPrefix(magic, zstdMagic):
		return "zstd"
	}
	return ""
}

// layerStream reads a layer's uncompressed tar while hashing both the
// stored blob and the tar, for finish to check.
type layerStream struct {
	io.Reader // the uncompressed tar
	l         layer
	raw       io.ReadCloser
	stored    *bufio.Reader // the blob, after its hasher
	dec       io.Closer     // decompressor, if any
	blobHash  hash.Hash
	diffHash  hash.Hash
}

// openLayer opens l's tar stream. Reads fail once ctx is done.
func openLayer(ctx context.Context, l layer) (*layerStream, error) {
	if l.diffID.Algorithm != "sha256" || (l.blob != v1.Hash{} && l.blob.Algorithm != "sha256") {
		return nil, fmt.Errorf("layer %s: unsupported digest algorithm", l.name)
	}
	raw, err := l.open()
	if err != nil {
		return nil, fmt.Errorf("opening layer %s: %w", l.name, err)
	}
	s := &layerStream{l: l, raw: raw, blobHash: sha256.New(), diffHash: sha256.New()}
	s.stored = bufio.NewReader(io.TeeReader(ctxReader{ctx, raw}, s.blobHash))
	magic, _ := s.stored.Peek(4)
	var tarStream io.Reader = s.stored
	switch compressed(magic) {
	case "gzip":
		zr, err := gzip.NewReader(s.stored)
		if err != nil {
			raw.Close()
			return nil, fmt.Errorf("layer %s: %w", l.name, err)
		}
		tarStream, s.dec = zr, zr
	case "zstd":
		zr, err := zstd.NewReader(s.stored, zstd.WithDecoderConcurrency(1))
		if err != nil {
			raw.Close()
			return nil, fmt.Errorf("layer %s: %w", l.name, err)
		}
		tarStream, s.dec = zr, zr.IOReadCloser()
	}
	s.Reader = io.TeeReader(tarStream, s.diffHash)
	return s, nil
}

// finish reads the rest of the layer, closes it and checks both digests.
func (s *layerStream) finish() error {
	defer s.close()
	if _, err := io.Copy(io.Discard, s.Reader); err != nil {
		return fmt.Errorf("reading layer %s: %w", s.l.name, err)
	}
	if _, err := io.Copy(io.Discard, s.stored); err != nil {
		return fmt.Errorf("reading layer %s: %w", s.l.name, err)
	}
	if s.l.blob != (v1.Hash{}) {
		if got := hex.EncodeToString(s.blobHash.Sum(nil)); got != s.l.blob.Hex {
			return fmt.Errorf("layer %s: blob digest mismatch: content hashes to sha256:%s", s.l.name, got)
		}
	}
	if got := hex.EncodeToString(s.diffHash.Sum(nil)); got != s.l.diffID.Hex {
		return fmt.Errorf("layer %s: diff ID mismatch: uncompressed content hashes to sha256:%s, config says %s", s.l.name, got, s.l.diffID)
	}
	return nil
}

// close releases the layer without checking it.
func (s *layerStream) close() {
	if s.dec != nil {
		s.dec.Close()
	}
	s.raw.Close()
}

// ctxReader fails reads once its context is done.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (r ctxReader) Read(p []byte) (int, error) {
	if err := r.ctx.Err(); err != nil {
		return 0, err
	}
	return r.r.Read(p)
}
