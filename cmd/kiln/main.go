// Command kiln bakes immutable OS images and netboots bare metal into them.
//
//	kiln build RECIPE --images DIR        bake an image, print its ID
//	kiln build --check RECIPE             validate a recipe only
//	kiln serve --interface IF --data DIR  DHCP + TFTP + HTTP on one interface
//	kiln machines add|get|list|rm         the machine inventory, over the API
//	kiln push --server URL --images DIR ID  upload an image to a server
//	kiln images list|show|rm|pin|unpin|gc the images in a store
//
// Every flag can also be set with a KILN_<FLAG> environment variable
// (KILN_HTTP_PORT for --http-port); a flag on the command line wins.
package main

import (
	"errors"
	"fmt"
	"io"
	"os"
)

// version is stamped by the Makefile with -ldflags "-X main.version=...".
var version = "dev"

// Exit codes. Pipelines can tell a mistake in how kiln was called from a
// failure of the work itself.
const (
	exitOK      = 0
	exitFailure = 1 // the work failed (I/O, network, server error)
	exitUsage   = 2 // bad flags, arguments or input (bad MAC, unknown image, ...)
	// Only kiln build returns these two, so that a pipeline can tell a
	// recipe to fix from an input to fetch.
	exitBadRecipe    = 3 // the recipe is invalid
	exitMissingInput = 4 // the recipe, or a file it names, does not exist
)

// exitError carries an exit code other than the generic ones.
type exitError struct {
	code int
	err  error
}

func (e exitError) Error() string { return e.err.Error() }
func (e exitError) Unwrap() error { return e.err }

// usageError marks an error as the caller's mistake (exit code 2).
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func usagef(format string, args ...any) error {
	return usageError{fmt.Errorf(format, args...)}
}

const mainUsage = `kiln bakes immutable OS images and netboots bare metal into them.

Usage:
  kiln build RECIPE --images DIR [--json]         bake an image, print its ID
  kiln build --check RECIPE [--json]              validate a recipe only
  kiln serve --interface IFACE --data DIR [...]   run DHCP + TFTP + HTTP
  kiln machines add|get|list|rm --server URL ...  manage the machine inventory
  kiln push --server URL --images DIR ID          upload an image to a server
  kiln images list|show|rm|pin|unpin|gc ...       the images of a store
  kiln version                                    print the version

Run "kiln COMMAND --help" for a command's flags. Every flag can also be set
with a KILN_<FLAG> environment variable, e.g. KILN_HTTP_PORT=8081.

Exit codes: 0 success, 1 failure, 2 bad usage or bad input; kiln build also
3 bad recipe, 4 missing input (see kiln build --help).
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, mainUsage)
		return exitUsage
	}
	var err error
	switch cmd, rest := args[0], args[1:]; cmd {
	case "build":
		err = cmdBuild(rest, stdout, stderr)
	case "serve":
		err = cmdServe(rest, stdout, stderr)
	case "machines":
		err = cmdMachines(rest, stdout, stderr)
	case "images":
		err = cmdImages(rest, stdout, stderr)
	case "push":
		err = cmdPush(rest, stdout, stderr)
	case "version", "--version":
		fmt.Fprintln(stdout, "kiln", version)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, mainUsage)
	default:
		fmt.Fprintf(stderr, "kiln: unknown command %q\n\n%s", cmd, mainUsage)
		return exitUsage
	}
	if err == nil || errors.Is(err, errHelp) {
		return exitOK
	}
	fmt.Fprintln(stderr, "kiln:", err)
	var ee exitError
	switch {
	case errors.As(err, &ee):
		return ee.code
	case errors.As(err, new(usageError)):
		return exitUsage
	}
	return exitFailure
}
