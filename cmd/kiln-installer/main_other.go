//go:build !linux

package main

import (
	"fmt"
	"os"
)

// The installer is the /init of a Linux initramfs; elsewhere it only says
// so.
func main() {
	fmt.Fprintln(os.Stderr, "kiln-installer: runs only as the /init of a Linux initramfs")
	os.Exit(2)
}
