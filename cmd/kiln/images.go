package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/kiln-dev/kiln/images"
)

const imagesUsage = `kiln images list  --images DIR [--json]
kiln images show  --images DIR ID [--json]
kiln images rm    --images DIR ID (--server URL | --force)
kiln images pin   --images DIR ID
kiln images unpin --images DIR ID
kiln images gc    --images DIR [--server URL] [--grace 1h] [--dry-run] [--json]

rm and gc never remove a pinned image. With --server (the kiln serve whose
store DIR is, i.e. DATA/images of kiln serve --data DATA), they never remove
an image a machine is assigned. Without it, rm refuses unless --force, and
gc keeps every image and removes only blobs no image references.
gc keeps whatever was written less than --grace ago, however unreferenced:
a build or a push may be about to publish the manifest that references it.`

// imagesFlags are the flags of every images subcommand; each uses some.
type imagesFlags struct {
	dir    string
	asJSON bool
	server string
	force  bool
	grace  time.Duration
	dryRun bool
}

func cmdImages(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		return usagef("images: want a subcommand: list, show, rm, pin, unpin or gc\n%s", imagesUsage)
	}
	sub, args := args[0], args[1:]
	var f imagesFlags
	fs := newFlagSet("images "+sub, imagesUsage, stderr)
	fs.StringVar(&f.dir, "images", "", "image store directory (required)")
	if sub != "pin" && sub != "unpin" {
		fs.BoolVar(&f.asJSON, "json", false, "print JSON")
	}
	if sub == "rm" || sub == "gc" {
		fs.StringVar(&f.server, "server", "", "URL of the kiln serve using this store: images its machines are assigned are kept")
	}
	switch sub {
	case "rm":
		fs.BoolVar(&f.force, "force", false, "remove without --server, although a machine may be assigned the image")
	case "gc":
		fs.DurationVar(&f.grace, "grace", time.Hour, "keep images and blobs written less than this long ago")
		fs.BoolVar(&f.dryRun, "dry-run", false, "print what would be removed; remove nothing")
	}
	handler, ok := map[string]func(*images.Store, []string, imagesFlags, io.Writer, io.Writer) error{
		"list": imagesList, "show": imagesShow, "rm": imagesRm, "pin": imagesPin, "unpin": imagesUnpin, "gc": imagesGC,
	}[sub]
	if !ok {
		return usagef("images: unknown subcommand %q\n%s", sub, imagesUsage)
	}
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if f.dir == "" {
		return usagef("images %s: --images DIR is required", sub)
	}
	st, err := images.Open(f.dir)
	if err != nil {
		return err
	}
	return handler(st, pos, f, stdout, stderr)
}

// imageArg parses the one ID argument of sub and checks the image is in st.
func imageArg(st *images.Store, sub string, pos []string) (images.Image, error) {
	if len(pos) != 1 {
		return images.Image{}, usagef("images %s: want one image ID argument, have %d", sub, len(pos))
	}
	id, err := images.ParseDigest(pos[0])
	if err != nil {
		return images.Image{}, usagef("images %s: %v", sub, err)
	}
	img, err := st.Stat(id)
	if errors.Is(err, images.ErrNotFound) {
		return images.Image{}, usagef("images %s: %v in %s", sub, err, st.Root())
	}
	return img, err
}

func imagesList(st *images.Store, pos []string, f imagesFlags, stdout, _ io.Writer) error {
	if len(pos) != 0 {
		return usagef("images list: unexpected arguments %q", pos)
	}
	list, err := st.List()
	if err != nil {
		return err
	}
	if list == nil {
		list = []images.Image{}
	}
	if f.asJSON {
		return writeJSON(stdout, map[string]any{"images": list})
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tNAME\tCREATED\tSIZE\tPINNED")
	for _, img := range list {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", img.ID, img.Manifest.Name, img.Created.Format(time.RFC3339), humanBytes(img.Size), yesNo(img.Pinned))
	}
	return tw.Flush()
}

func imagesShow(st *images.Store, pos []string, f imagesFlags, stdout, _ io.Writer) error {
	img, err := imageArg(st, "show", pos)
	if err != nil {
		return err
	}
	if f.asJSON {
		return writeJSON(stdout, img)
	}
	m := img.Manifest
	fmt.Fprintf(stdout, "id:      %s\nname:    %s\ncreated: %s\nsize:    %s\ninputs:  %s\ncmdline: %s\npinned:  %s\nartifacts:\n",
		img.ID, m.Name, img.Created.Format(time.RFC3339), humanBytes(img.Size), m.Inputs, m.Cmdline, yesNo(img.Pinned))
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	for _, a := range m.Artifacts {
		fmt.Fprintf(tw, "  %s\t%s\t%s\n", a.Name, a.Digest, humanBytes(a.Size))
	}
	return tw.Flush()
}

func imagesRm(st *images.Store, pos []string, f imagesFlags, stdout, _ io.Writer) error {
	img, err := imageArg(st, "rm", pos)
	if err != nil {
		return err
	}
	if img.Pinned {
		return usagef("images rm: %s is pinned: run kiln images unpin first", img.ID)
	}
	switch {
	case f.server != "":
		inUse, err := machineImages(f.server, st)
		if err != nil {
			return err
		}
		if users := inUse[img.ID]; len(users) > 0 {
			return usagef("images rm: %s is assigned to %s: assign them another image first", img.ID, strings.Join(users, ", "))
		}
	case !f.force:
		return usagef("images rm: without --server kiln cannot tell whether a machine is assigned %s: give --server URL (the kiln serve using %s), or --force", img.ID, st.Root())
	}
	if err := st.Remove(img.ID); err != nil {
		if errors.Is(err, images.ErrPinned) || errors.Is(err, images.ErrNotFound) {
			return usageError{err}
		}
		return err
	}
	if f.asJSON {
		return writeJSON(stdout, map[string]any{"removed": img.ID})
	}
	fmt.Fprintf(stdout, "removed %s (%s); its blobs stay until kiln images gc\n", img.ID, img.Manifest.Name)
	return nil
}

func imagesPin(st *images.Store, pos []string, _ imagesFlags, stdout, _ io.Writer) error {
	img, err := imageArg(st, "pin", pos)
	if err != nil {
		return err
	}
	if err := st.Pin(img.ID); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "pinned %s (%s)\n", img.ID, img.Manifest.Name)
	return nil
}

func imagesUnpin(st *images.Store, pos []string, _ imagesFlags, stdout, _ io.Writer) error {
	if len(pos) != 1 {
		return usagef("images unpin: want one image ID argument, have %d", len(pos))
	}
	id, err := images.ParseDigest(pos[0])
	if err != nil {
		return usagef("images unpin: %v", err)
	}
	pinned, err := st.Pinned(id)
	if err != nil {
		return err
	}
	if !pinned {
		fmt.Fprintf(stdout, "%s was not pinned\n", id)
		return nil
	}
	if err := st.Unpin(id); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "unpinned %s\n", id)
	return nil
}

func imagesGC(st *images.Store, pos []string, f imagesFlags, stdout, stderr io.Writer) error {
	if len(pos) != 0 {
		return usagef("images gc: unexpected arguments %q", pos)
	}
	if f.grace < 0 {
		return usagef("images gc: --grace %s is negative", f.grace)
	}
	opt := images.GCOptions{Grace: f.grace, DryRun: f.dryRun}
	if f.server != "" {
		inUse, err := machineImages(f.server, st)
		if err != nil {
			return err
		}
		opt.CollectImages, opt.InUse = true, map[images.Digest]bool{}
		for id := range inUse {
			opt.InUse[id] = true
		}
	} else {
		fmt.Fprintln(stderr, "kiln: images gc: no --server, so every image is kept; removing only blobs no image references")
	}
	names := map[images.Digest]string{}
	if list, err := st.List(); err == nil {
		for _, img := range list {
			names[img.ID] = img.Manifest.Name
		}
	}
	rep, err := st.GC(opt)
	if err != nil {
		return err
	}
	if f.asJSON {
		return writeJSON(stdout, rep)
	}
	verb := "removed"
	if rep.DryRun {
		verb = "would remove"
	}
	for _, id := range rep.Images {
		fmt.Fprintf(stdout, "%s image %s (%s)\n", verb, id, names[id])
	}
	for _, b := range rep.Blobs {
		fmt.Fprintf(stdout, "%s blob  %s (%s)\n", verb, b.Digest, humanBytes(b.Size))
	}
	fmt.Fprintf(stdout, "%s %d images and %d blobs (%s)", verb, len(rep.Images), len(rep.Blobs), humanBytes(rep.Bytes))
	if rep.Young > 0 {
		fmt.Fprintf(stdout, "; kept %d unreferenced written less than --grace %s ago", rep.Young, f.grace)
	}
	fmt.Fprintln(stdout)
	return nil
}

// machineImages asks the kiln serve at server which images each machine
// keeps (pinnedBy), and returns for each image ID the machines assigned it
// ("hostname (mac)"). It refuses a server that lists an image st does not
// hold: that server does not use st, and its machines say nothing of
// which of st's images are in use.
func machineImages(server string, st *images.Store) (map[images.Digest][]string, error) {
	c := newAPIClient(server, 30*time.Second)
	ctx := context.Background()
	var served struct {
		Images []struct {
			ID images.Digest `json:"id"`
		} `json:"images"`
	}
	if err := c.do(ctx, http.MethodGet, "/api/v1/images", nil, &served); err != nil {
		return nil, err
	}
	for _, img := range served.Images {
		if _, err := st.Get(img.ID); errors.Is(err, images.ErrNotFound) {
			return nil, usagef("--server %s serves image %s, which is not in %s: is %s that server's image store (DATA/images of kiln serve --data DATA)?", server, img.ID, st.Root(), st.Root())
		}
	}
	var resp struct {
		Machines []machineView `json:"machines"`
	}
	if err := c.do(ctx, http.MethodGet, "/api/v1/machines", nil, &resp); err != nil {
		return nil, err
	}
	out := map[images.Digest][]string{}
	for _, m := range resp.Machines {
		who := fmt.Sprintf("%s (%s)", m.Hostname, m.MAC)
		for id := range pinnedBy(m) {
			out[id] = append(out[id], who)
		}
	}
	return out, nil
}

// pinnedBy returns the images machine m keeps from gc: its current image,
// the image it runs, and the images of its last two generations, so that a
// rollback always finds its image.
func pinnedBy(m machineView) map[images.Digest]bool {
	ids := map[images.Digest]bool{}
	for _, id := range []string{m.Image, m.RunningImage} {
		if id != "" {
			ids[images.Digest(id)] = true
		}
	}
	for _, g := range m.Generations {
		if g.N >= m.Generation-1 && g.Image != "" {
			ids[images.Digest(g.Image)] = true
		}
	}
	return ids
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}
