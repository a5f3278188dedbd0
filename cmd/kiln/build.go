package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"

	"github.com/kiln-dev/kiln/builder"
	"github.com/kiln-dev/kiln/images"
)

func cmdBuild(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("build", "kiln build RECIPE --images DIR [--json]", stderr)
	dir := fs.String("images", "", "image store directory to publish into (e.g. DATA/images of a running kiln serve)")
	asJSON := fs.Bool("json", false, "print one JSON object (id, name, inputs, artifacts) instead of the ID")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usagef("build: want exactly one RECIPE argument, have %d", len(pos))
	}
	if *dir == "" {
		return usagef("build: --images DIR is required")
	}
	recipe, err := builder.LoadRecipe(pos[0])
	if err != nil {
		return usageError{err}
	}
	st, err := images.Open(*dir)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	res, err := builder.Build(ctx, recipe, st, builder.Options{Log: log, Progress: progressPrinter(stderr, *asJSON)})
	if err != nil {
		return fmt.Errorf("build %s: %w", pos[0], err)
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(res)
	}
	fmt.Fprintln(stdout, res.ID)
	return nil
}

// progressPrinter reports build stages as plain lines on stderr, one per
// stage, so logs and terminals both read well.
func progressPrinter(w io.Writer, quiet bool) func(stage string, done, total int64) {
	if quiet {
		return nil
	}
	last := ""
	return func(stage string, done, total int64) {
		if stage == last && done < total {
			return
		}
		last = stage
		if total > 0 && done >= total {
			fmt.Fprintf(w, "%s: done (%s)\n", stage, humanBytes(done))
		} else if stage != "" && done == 0 {
			fmt.Fprintf(w, "%s...\n", stage)
		}
	}
}

func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
