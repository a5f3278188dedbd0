package iso

import (
	"strings"
)

// Paths inside the ISO and, for the kernel and initrd, inside the FAT image.
const (
	isoKernel   = "kiln/vmlinuz"
	isoInitrd   = "kiln/initrd"
	isoISOLinux = "isolinux/isolinux.bin"
	isoLDLinux  = "isolinux/ldlinux.c32"
	isoCfg      = "isolinux/isolinux.cfg"
	isoCatalog  = "isolinux/boot.cat"
	isoEFIImage = "efi/efiboot.img"

	fatBootloader = "EFI/BOOT/BOOTX64.EFI"
	fatLoaderConf = "loader/loader.conf"
	fatEntry      = "loader/entries/kiln.conf"
)

// defaultLabel is the volume label of a Spec without one.
const defaultLabel = "KILN"

// volumeLabel turns l into an ISO 9660 volume identifier: d-characters
// (A-Z, 0-9, _), at most 32 of them (ECMA-119 8.4.11, 7.4.1).
func volumeLabel(l string) string {
	l = strings.Map(func(r rune) rune {
		switch {
		case r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '_':
			return r
		case r >= 'a' && r <= 'z':
			return r - 'a' + 'A'
		default:
			return '_'
		}
	}, l)
	if len(l) > 32 {
		l = l[:32]
	}
	if strings.Trim(l, "_") == "" {
		return defaultLabel
	}
	return l
}

// fatLabel is the FAT volume label for the ISO label l, at most 11
// characters.
func fatLabel(l string) string {
	if len(l) > 11 {
		l = l[:11]
	}
	return l
}

// isolinuxCfg is the ISOLINUX configuration: boot the kernel at once.
func isolinuxCfg(cmdline string, initrd bool) []byte {
	var b strings.Builder
	b.WriteString("PROMPT 0\nDEFAULT kiln\nLABEL kiln\n  KERNEL /" + isoKernel + "\n")
	if initrd {
		b.WriteString("  INITRD /" + isoInitrd + "\n")
	}
	if cmdline != "" {
		b.WriteString("  APPEND " + cmdline + "\n")
	}
	return []byte(b.String())
}

// loaderConf is systemd-boot's loader.conf: boot the kiln entry at once.
func loaderConf() []byte {
	return []byte("default kiln.conf\ntimeout 0\n")
}

// loaderEntry is the systemd-boot entry (Boot Loader Specification, type 1).
func loaderEntry(title, cmdline string, initrd bool) []byte {
	var b strings.Builder
	b.WriteString("title " + title + "\nlinux /" + isoKernel + "\n")
	if initrd {
		b.WriteString("initrd /" + isoInitrd + "\n")
	}
	if cmdline != "" {
		b.WriteString("options " + cmdline + "\n")
	}
	return []byte(b.String())
}
