package main

import (
	"encoding/json"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/kiln-dev/kiln/images"
)

func cmdImages(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "list" {
		return usagef("images: want a subcommand: list")
	}
	fs := newFlagSet("images list", "kiln images list --images DIR [--json]", stderr)
	dir := fs.String("images", "", "image store directory")
	asJSON := fs.Bool("json", false, "print JSON")
	pos, err := parseFlags(fs, args[1:])
	if err != nil {
		return err
	}
	if len(pos) != 0 || *dir == "" {
		return usagef("images list: want --images DIR and no arguments")
	}
	st, err := images.Open(*dir)
	if err != nil {
		return err
	}
	list, err := st.List()
	if err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(map[string]any{"images": list})
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tNAME\tCREATED\tSIZE")
	for _, img := range list {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", img.ID, img.Manifest.Name, img.Created.Format(time.RFC3339), humanBytes(img.Size))
	}
	return tw.Flush()
}
