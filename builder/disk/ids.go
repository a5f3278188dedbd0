package disk

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
)

// derive returns sha256("kiln/disk\x00" || purpose || "\x00" || seed): the
// bytes of every identifier in an image come from it, each purpose
// ("disk", "esp", "root", ...) giving unrelated values.
func derive(seed []byte, purpose string) [sha256.Size]byte {
	h := sha256.New()
	h.Write([]byte("kiln/disk\x00" + purpose + "\x00"))
	h.Write(seed)
	var sum [sha256.Size]byte
	h.Sum(sum[:0])
	return sum
}

// deriveGUID returns a GUID for purpose, in the lower-case text form,
// with the RFC 9562 version 4 and variant bits set like a random one.
func deriveGUID(seed []byte, purpose string) string {
	b := derive(seed, purpose)
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

// deriveSerial returns a non-zero 32-bit serial number for purpose.
func deriveSerial(seed []byte, purpose string) uint32 {
	b := derive(seed, purpose)
	if v := binary.LittleEndian.Uint32(b[:4]); v != 0 {
		return v
	}
	return 1
}
