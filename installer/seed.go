package installer

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"
)

// SeedMagic starts the seed area, followed by the seed text, one newline,
// and zeros up to SeedAreaSize.
const SeedMagic = "KILN-SEED 1\n"

// ErrNoSeed is returned by ReadSeed when the seed area does not start with
// SeedMagic.
var ErrNoSeed = errors.New("no kiln seed")

// WriteSeed writes seed to the seed area of target, the last SeedAreaSize
// bytes of a disk of targetSize bytes: SeedMagic, the seed, "\n", then
// zeros to the end of the area. The installed system reads it with e.g.
// `tail -c 1048576 /dev/vda | tr -d '\0'`.
func WriteSeed(target io.WriterAt, targetSize int64, seed string) error {
	if len(seed) > MaxSeed {
		return fmt.Errorf("writing seed: %d bytes, more than %d", len(seed), MaxSeed)
	}
	if strings.IndexByte(seed, 0) >= 0 {
		return errors.New("writing seed: contains a NUL byte")
	}
	if targetSize < SeedAreaSize {
		return fmt.Errorf("writing seed: target of %d bytes is smaller than the seed area", targetSize)
	}
	area := make([]byte, SeedAreaSize)
	n := copy(area, SeedMagic)
	n += copy(area[n:], seed)
	area[n] = '\n'
	if _, err := target.WriteAt(area, targetSize-SeedAreaSize); err != nil {
		return fmt.Errorf("writing seed at byte %d: %w", targetSize-SeedAreaSize, err)
	}
	return nil
}

// ReadSeed reads the seed that WriteSeed wrote to a disk of targetSize
// bytes. It returns ErrNoSeed if the area has no seed (e.g. zeroed by a
// failed install).
func ReadSeed(r io.ReaderAt, targetSize int64) (string, error) {
	if targetSize < SeedAreaSize {
		return "", fmt.Errorf("reading seed: disk of %d bytes is smaller than the seed area", targetSize)
	}
	area := make([]byte, SeedAreaSize)
	if _, err := r.ReadAt(area, targetSize-SeedAreaSize); err != nil {
		return "", fmt.Errorf("reading seed at byte %d: %w", targetSize-SeedAreaSize, err)
	}
	if !bytes.HasPrefix(area, []byte(SeedMagic)) {
		return "", ErrNoSeed
	}
	text := area[len(SeedMagic):]
	if i := bytes.IndexByte(text, 0); i >= 0 {
		text = text[:i]
	}
	if !bytes.HasSuffix(text, []byte("\n")) {
		return "", errors.New("reading seed: not terminated by a newline")
	}
	return string(text[:len(text)-1]), nil
}
