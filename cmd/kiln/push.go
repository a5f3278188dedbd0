package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"slices"
	"strconv"

	"github.com/kiln-dev/kiln/images"
)

const pushUsage = `kiln push --server URL --images DIR [--json] ID

Uploads image ID from the local store DIR to the kiln serve at URL: each
blob the server does not have yet (asked with HEAD /api/v1/blobs/DIGEST) is
streamed with PUT /api/v1/blobs/DIGEST, then the manifest with
PUT /api/v1/images/ID. The server verifies every digest before anything
becomes visible. Pushing an image the server has uploads nothing.`

// pushJSON is what kiln push --json prints.
type pushJSON struct {
	ID       images.Digest   `json:"id"`
	Uploaded []images.Digest `json:"uploaded"`
	Skipped  []images.Digest `json:"skipped"`
}

func cmdPush(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("push", pushUsage, stderr)
	server := fs.String("server", "", "URL of the kiln serve to push to (required)")
	dir := fs.String("images", "", "local image store holding the image (required)")
	asJSON := fs.Bool("json", false, `print {"id", "uploaded", "skipped"} instead of a line per blob`)
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usagef("push: want exactly one image ID argument, have %d", len(pos))
	}
	if *server == "" || *dir == "" {
		return usagef("push: --server URL and --images DIR are required")
	}
	id, err := images.ParseDigest(pos[0])
	if err != nil {
		return usagef("push: image ID: %v", err)
	}
	st, err := images.Open(*dir)
	if err != nil {
		return err
	}
	raw, err := st.ManifestBytes(id)
	if errors.Is(err, images.ErrNotFound) {
		return usagef("push: %v in %s", err, *dir)
	}
	if err != nil {
		return err
	}
	var m images.Manifest
	if err := json.Unmarshal(raw, &m); err != nil {
		return fmt.Errorf("push: decoding manifest %s: %w", id, err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	p := &pusher{c: newAPIClient(*server, 0), st: st, out: stdout, quiet: *asJSON, done: map[images.Digest]bool{}}
	res := pushJSON{ID: id, Uploaded: []images.Digest{}, Skipped: []images.Digest{}}
	// If the server loses a blob it said it had (its gc ran between our
	// HEAD and the manifest), it refuses the manifest with 409: ask again
	// once, and upload what is missing now.
	for attempt := 1; ; attempt++ {
		if err := p.blobs(ctx, m, &res); err != nil {
			return err
		}
		_, _, err = p.c.send(ctx, http.MethodPut, "/api/v1/images/"+string(id), http.Header{"Content-Type": {"application/json"}}, bytes.NewReader(raw), int64(len(raw)))
		if err == nil {
			break
		}
		if attempt == 2 || !isStatus(err, http.StatusConflict) {
			return fmt.Errorf("push %s: %w", id, err)
		}
		clear(p.done)
	}
	if *asJSON {
		return writeJSON(stdout, res)
	}
	fmt.Fprintf(stdout, "pushed %s (%s): %d uploaded, %d skipped\n", id, m.Name, len(res.Uploaded), len(res.Skipped))
	return nil
}

// pusher uploads the blobs of one image.
type pusher struct {
	c     *apiClient
	st    *images.Store
	out   io.Writer
	quiet bool
	done  map[images.Digest]bool // blobs checked in this pass
}

// blobs makes sure the server has every artifact of m, recording each
// digest in res as uploaded or skipped.
func (p *pusher) blobs(ctx context.Context, m images.Manifest, res *pushJSON) error {
	for _, a := range m.Artifacts {
		if p.done[a.Digest] {
			continue
		}
		p.done[a.Digest] = true
		has, err := p.has(ctx, a)
		if err != nil {
			return err
		}
		if has {
			if !slices.Contains(res.Uploaded, a.Digest) && !slices.Contains(res.Skipped, a.Digest) {
				res.Skipped = append(res.Skipped, a.Digest)
			}
			p.say("skip   %s %s (%s)\n", a.Digest, a.Name, humanBytes(a.Size))
			continue
		}
		p.say("upload %s %s (%s)\n", a.Digest, a.Name, humanBytes(a.Size))
		if err := p.upload(ctx, a); err != nil {
			return err
		}
		res.Skipped = slices.DeleteFunc(res.Skipped, func(d images.Digest) bool { return d == a.Digest })
		if !slices.Contains(res.Uploaded, a.Digest) {
			res.Uploaded = append(res.Uploaded, a.Digest)
		}
	}
	return nil
}

func (p *pusher) say(format string, args ...any) {
	if !p.quiet {
		fmt.Fprintf(p.out, format, args...)
	}
}

// has asks the server whether it stores blob a with a's size.
func (p *pusher) has(ctx context.Context, a images.Artifact) (bool, error) {
	path := "/api/v1/blobs/" + string(a.Digest)
	req, err := http.NewRequestWithContext(ctx, http.MethodHead, p.c.base+path, nil)
	if err != nil {
		return false, usagef("--server %q: %v", p.c.base, err)
	}
	resp, err := p.c.http.Do(req)
	if err != nil {
		return false, fmt.Errorf("HEAD %s: %w", path, err)
	}
	resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusNotFound:
		return false, nil
	case resp.StatusCode != http.StatusOK:
		return false, statusError(http.MethodHead, path, resp, nil)
	case resp.ContentLength != a.Size:
		return false, fmt.Errorf("HEAD %s: the server has it with %d bytes, the manifest says %d", path, resp.ContentLength, a.Size)
	}
	return true, nil
}

// upload streams blob a from the local store to the server.
func (p *pusher) upload(ctx context.Context, a images.Artifact) error {
	f, err := p.st.OpenBlob(a.Digest)
	if err != nil {
		return fmt.Errorf("push: artifact %s: %w", a.Name, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if fi.Size() != a.Size {
		return fmt.Errorf("push: local blob %s has %d bytes, the manifest says %d", a.Digest, fi.Size(), a.Size)
	}
	h := http.Header{
		"Content-Type": {"application/octet-stream"},
		// The server answers before the body if it has the blob already.
		"Expect": {"100-continue"},
	}
	_, _, err = p.c.send(ctx, http.MethodPut, "/api/v1/blobs/"+string(a.Digest), h, f, a.Size)
	if err != nil {
		return fmt.Errorf("push: uploading %s (%s, %s bytes): %w", a.Name, a.Digest, strconv.FormatInt(a.Size, 10), err)
	}
	return nil
}

// isStatus reports whether err is the answer of a server with status code.
func isStatus(err error, code int) bool {
	var se *httpStatusError
	return errors.As(err, &se) && se.code == code
}
