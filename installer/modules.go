package installer

import (
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
)

// maxModule bounds a decompressed kernel module (the largest in a Debian
// kernel are a few MiB).
const maxModule = 64 * MiB

// ModuleLoader loads one kernel module image (init_module(2)); name is the
// module's file name without .ko and compression suffix. It MUST return an
// error for which errors.Is(err, fs.ErrExist) holds when the module is
// already loaded (syscall.EEXIST does).
type ModuleLoader func(name string, image []byte) error

// ModuleResult is what LoadModules did.
type ModuleResult struct {
	// Loaded names the modules loaded (or found already loaded), in load
	// order.
	Loaded []string
	// Failed maps each module that never loaded to its last error.
	Failed map[string]error
	// Rounds is the number of passes made.
	Rounds int
}

// LoadModules loads every kernel module (*.ko, *.ko.xz, *.ko.zst, *.ko.gz)
// found under the directories roots, flat or nested (missing roots are
// skipped), with load. Without modules.dep the dependency order is
// unknown, so it makes rounds: each round tries every module not loaded
// yet, and rounds go on while one loads something. A module found twice
// (e.g. /lib and /usr/lib) is loaded once.
func LoadModules(roots []string, load ModuleLoader) ModuleResult {
	res := ModuleResult{Failed: map[string]error{}}
	paths := map[string]string{} // module name → file
	var names []string
	for _, root := range roots {
		filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return nil // unreadable entries are skipped
			}
			name, ok := moduleName(d.Name())
			if !ok || paths[name] != "" {
				return nil
			}
			paths[name] = p
			names = append(names, name)
			return nil
		})
	}
	slices.Sort(names)
	pending := names
	for len(pending) > 0 {
		res.Rounds++
		var next []string
		for _, name := range pending {
			// Read again each round rather than keep every image in
			// memory: a full initrd's modules would not fit in a small VM.
			img, err := readModule(paths[name])
			if err != nil {
				res.Failed[name] = err
				continue // unreadable: no retry
			}
			if err := load(name, img); err != nil && !errors.Is(err, fs.ErrExist) {
				res.Failed[name] = err
				next = append(next, name)
				continue
			}
			delete(res.Failed, name)
			res.Loaded = append(res.Loaded, name)
		}
		if len(next) == len(pending) {
			break // no progress
		}
		pending = next
	}
	return res
}

// BUG(kiln): LoadModules loads every module it finds, not only NIC and
// disk drivers, and ignores modules.dep and module parameters: meant for a
// stage-1 initrd carrying a handful of drivers. A full distribution initrd
// would load all of its modules (slowly, in as many rounds as its
// dependency depth).

// moduleName returns the module name of a module file name.
func moduleName(file string) (string, bool) {
	for _, ext := range []string{".ko", ".ko.xz", ".ko.zst", ".ko.gz"} {
		if name, ok := strings.CutSuffix(file, ext); ok && name != "" {
			return name, true
		}
	}
	return "", false
}

// readModule reads a module file, decompressing it by its suffix.
func readModule(p string) ([]byte, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var r io.Reader = f
	switch {
	case strings.HasSuffix(p, ".xz"):
		if r, err = xz.NewReader(f); err != nil {
			return nil, fmt.Errorf("%s: %w", p, err)
		}
	case strings.HasSuffix(p, ".zst"):
		d, err := zstd.NewReader(f, zstd.WithDecoderConcurrency(1))
		if err != nil {
			return nil, fmt.Errorf("%s: %w", p, err)
		}
		defer d.Close()
		r = d
	case strings.HasSuffix(p, ".gz"):
		if r, err = gzip.NewReader(f); err != nil {
			return nil, fmt.Errorf("%s: %w", p, err)
		}
	}
	var buf bytes.Buffer
	n, err := io.Copy(&buf, io.LimitReader(r, maxModule+1))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", p, err)
	}
	if n > maxModule {
		return nil, fmt.Errorf("%s: larger than %d bytes", p, maxModule)
	}
	return buf.Bytes(), nil
}
