"""Rebuild manifest.csv from a local copy of Abhikrsh/Signature-verification (how the committed one was made).

Usage: python datasets/signatures_sigcomp2011/make_manifest.py GIT_DIR_OR_CLONE [COMMIT]

Only sign_data/Dataset/train is used: every file of sign_data/Dataset/test is a byte-identical copy of one in
train. Labels: folder NNN -> genuine, NNN_forg -> counterfeit (a forgery of writer NNN). Group: the writer
whose signature it is, per label ("wNNN-genuine", "wNNN-forged"), so all genuine signatures of one writer
stay in one split, and so do all forgeries of one writer.
"""

import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from train.real_data import Entry, RepoReader, sha1_bytes, write_manifest  # noqa: E402

SOURCE = "Abhikrsh/Signature-verification"
PREFIX = "sign_data/Dataset/train/"


def main(repo: str, commit: str = "HEAD") -> None:
    git = ["git", "--git-dir", repo] if (Path(repo) / "objects").is_dir() else ["git", "-C", repo]
    commit = subprocess.run(git + ["rev-parse", commit], check=True, capture_output=True, text=True).stdout.strip()
    paths = subprocess.run(git + ["ls-tree", "-r", "--name-only", commit, PREFIX], check=True,
                           capture_output=True, text=True).stdout.splitlines()
    entries = []
    with RepoReader(repo) as reader:
        for path in paths:
            if not path.lower().endswith(".png"):
                continue
            folder = path[len(PREFIX):].split("/")[0]
            forged = folder.endswith("_forg")
            writer = folder.removesuffix("_forg")
            entries.append(Entry(SOURCE, commit, path, sha1_bytes(reader.read(commit, path)),
                                 "counterfeit" if forged else "genuine",
                                 f"w{writer}-{'forged' if forged else 'genuine'}"))
    out = Path(__file__).with_name("manifest.csv")
    print(f"wrote {write_manifest(out, entries)} rows to {out}")


if __name__ == "__main__":
    main(*sys.argv[1:])
