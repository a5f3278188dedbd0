package iso

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/diskfs/go-diskfs/backend/file"
	"github.com/diskfs/go-diskfs/filesystem/iso9660"
)

// writeISO stages the ISO tree in the new directory tree and writes the
// image into the empty file f. go-diskfs removes tree when it is done.
func writeISO(ctx context.Context, f *os.File, tree string, in inputs, efi, label, cmdline string) error {
	if err := stageTree(ctx, tree, in, efi, cmdline); err != nil {
		return fmt.Errorf("staging files: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := finalizeISO(f, tree, label); err != nil {
		return err
	}
	if err := normalizeISO(f); err != nil {
		return fmt.Errorf("normalizing iso9660 file system: %w", err)
	}
	return nil
}

// finalizeISO has go-diskfs write the ISO image of tree into f, with Rock
// Ridge and the El Torito catalog. It removes tree.
func finalizeISO(f *os.File, tree, label string) error {
	fs, err := iso9660.Create(file.New(f, false), 0, 0, isoBlock, tree)
	if err != nil {
		return fmt.Errorf("creating iso9660 file system: %w", err)
	}
	err = fs.Finalize(iso9660.FinalizeOptions{
		RockRidge:        true,
		VolumeIdentifier: label,
		ElTorito: &iso9660.ElTorito{
			BootCatalog: "/" + isoCatalog,
			Entries: []*iso9660.ElToritoEntry{
				{
					Platform:  iso9660.BIOS,
					Emulation: iso9660.NoEmulation,
					BootFile:  "/" + isoISOLinux,
					BootTable: true,
				},
				{
					Platform:  iso9660.EFI,
					Emulation: iso9660.NoEmulation,
					BootFile:  "/" + isoEFIImage,
				},
			},
		},
	})
	if err != nil {
		return fmt.Errorf("finalizing iso9660 file system: %w", err)
	}
	return nil
}

// stageTree lays out the ISO's files in tree, with fixed modes (go-diskfs
// copies them into Rock Ridge PX entries). The EFI image moves in.
func stageTree(ctx context.Context, tree string, in inputs, efi, cmdline string) error {
	for _, d := range []string{"", "isolinux", "kiln", "efi"} {
		if err := os.Mkdir(filepath.Join(tree, d), 0o755); err != nil {
			return err
		}
	}
	copies := [][2]string{
		{isoISOLinux, in.isolinux},
		{isoLDLinux, in.ldlinux},
		{isoKernel, in.kernel},
	}
	if in.initrd != "" {
		copies = append(copies, [2]string{isoInitrd, in.initrd})
	}
	for _, c := range copies {
		if err := copyFile(ctx, filepath.Join(tree, c[0]), c[1]); err != nil {
			return err
		}
	}
	if err := os.WriteFile(filepath.Join(tree, isoCfg), isolinuxCfg(cmdline, in.initrd != ""), 0o644); err != nil {
		return err
	}
	if err := os.Rename(efi, filepath.Join(tree, isoEFIImage)); err != nil {
		return err
	}
	// Undo the umask.
	return filepath.WalkDir(tree, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		mode := os.FileMode(0o644)
		if d.IsDir() {
			mode = 0o755
		}
		return os.Chmod(p, mode)
	})
}
