package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	iofs "io/fs"
	"os"
	"os/signal"

	"github.com/kiln-dev/kiln/builder"
	"github.com/kiln-dev/kiln/images"
)

const buildUsage = `kiln build RECIPE --images DIR [--json] [--no-cache] [--log-level LEVEL]
       kiln build --check RECIPE [--json]

--check validates the recipe (its fields and that every file it names
exists) and builds nothing; it needs no --images.

The build bakes every output the recipe lists (initramfs, squashfs, disk,
iso, uki) and publishes one image; it prints the image ID (with --json, the
ID, name, inputs digest, artifacts and which came from the cache). Outputs
whose inputs did not change since an earlier build, and Debian bases, come
from the build cache in DIR/cache/build. On a terminal the stages show as
progress bars; otherwise one line per stage.

Exit codes:
  0  built (or, with --check, the recipe is valid)
  1  the build failed (I/O, compression, store)
  2  bad usage: flags or arguments
  3  bad recipe: the recipe has errors (each names its file, line and field)
  4  missing input: the recipe, or a file it names, does not exist
     (and nothing else is wrong with it)`

func cmdBuild(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("build", buildUsage, stderr)
	dir := fs.String("images", "", "image store directory to publish into (e.g. DATA/images of a running kiln serve)")
	asJSON := fs.Bool("json", false, "print one JSON object (id, name, inputs, artifacts; with --check: ok, errors) instead of text")
	check := fs.Bool("check", false, "validate the recipe only; build and publish nothing")
	noCache := fs.Bool("no-cache", false, "bake every output afresh instead of reusing the build cache (DIR/cache/build)")
	logLevel := fs.String("log-level", "warn", "debug, info (one line per stage with its duration), warn or error; logs go to stderr")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usagef("build: want exactly one RECIPE argument, have %d", len(pos))
	}
	if *dir == "" && !*check {
		return usagef("build: --images DIR is required")
	}
	recipe, err := builder.LoadRecipe(pos[0])
	if *check {
		return printCheck(stdout, pos[0], recipe, err, *asJSON)
	}
	if err != nil {
		return recipeFailure(err)
	}
	st, err := images.Open(*dir)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	log, err := newLogger(stderr, *logLevel, "text")
	if err != nil {
		return err
	}
	bp := newBuildProgress(stderr, *asJSON)
	res, err := builder.Build(ctx, recipe, st, builder.Options{Log: log, Progress: bp.update, NoCache: *noCache})
	bp.close()
	if errors.As(err, new(*builder.RecipeError)) {
		// Build validates again: a file may have gone since LoadRecipe.
		return recipeFailure(err)
	}
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

// recipeFailure gives a recipe's errors their exit code: 4 if every one of
// them is a file that does not exist (fetch the inputs and run again), 3 if
// any is something else (fix the recipe).
func recipeFailure(err error) error {
	if onlyMissing(err) {
		return exitError{code: exitMissingInput, err: err}
	}
	return exitError{code: exitBadRecipe, err: err}
}

// onlyMissing reports whether err, and every error it joins, is a missing
// file.
func onlyMissing(err error) bool {
	var joined interface{ Unwrap() []error }
	if errors.As(err, &joined) {
		for _, e := range joined.Unwrap() {
			if !onlyMissing(e) {
				return false
			}
		}
		return true
	}
	return errors.Is(err, iofs.ErrNotExist)
}

// checkJSON is what kiln build --check --json prints.
type checkJSON struct {
	OK     bool             `json:"ok"`
	Recipe string           `json:"recipe"`
	Name   string           `json:"name,omitempty"`
	Errors []checkErrorJSON `json:"errors"`
}

type checkErrorJSON struct {
	File  string `json:"file,omitempty"`
	Line  int    `json:"line,omitempty"`
	Field string `json:"field,omitempty"`
	Error string `json:"error"`
	// Missing is set when the problem is a file that does not exist.
	Missing bool `json:"missing,omitempty"`
}

// printCheck prints the outcome of kiln build --check and returns the
// recipe's error, if any, with its exit code.
func printCheck(w io.Writer, path string, r *builder.Recipe, err error, asJSON bool) error {
	if asJSON {
		out := checkJSON{OK: err == nil, Recipe: path, Errors: []checkErrorJSON{}}
		if r != nil {
			out.Name = r.Name
		}
		for _, e := range flatten(err) {
			ce := checkErrorJSON{Error: e.Error(), Missing: errors.Is(e, iofs.ErrNotExist)}
			var re *builder.RecipeError
			if errors.As(e, &re) {
				ce = checkErrorJSON{File: re.File, Line: re.Line, Field: re.Field, Error: re.Err.Error(), Missing: ce.Missing}
			}
			out.Errors = append(out.Errors, ce)
		}
		if werr := writeJSON(w, out); werr != nil {
			return werr
		}
	} else if err == nil {
		fmt.Fprintln(w, "ok")
	}
	if err != nil {
		return recipeFailure(err)
	}
	return nil
}

// flatten returns the errors err joins, or err alone.
func flatten(err error) []error {
	if err == nil {
		return nil
	}
	var joined interface{ Unwrap() []error }
	if errors.As(err, &joined) {
		var out []error
		for _, e := range joined.Unwrap() {
			out = append(out, flatten(e)...)
		}
		return out
	}
	return []error{err}
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
