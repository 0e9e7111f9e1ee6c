//! Builds an ext4 image from host directories, for manual testing and
//! timing: `cargo run --release -p cairn-ext4 --example mkfs -- OUT.img
//! SRC[:DEST]...` (the image gets the smallest size plus 10%).

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use cairn_fstree::{FileData, Kind, Meta, Node, NodeId, Tree};

type Res<T> = Result<T, Box<dyn std::error::Error>>;

fn add(
    tree: &mut Tree,
    links: &mut HashMap<(u64, u64), NodeId>,
    src: &Path,
    dest: &Path,
) -> Res<()> {
    let md = std::fs::symlink_metadata(src)?;
    let meta = Meta {
        mode: (md.mode() & 0o7777) as u16,
        uid: md.uid(),
        gid: md.gid(),
        xattrs: Default::default(),
    };
    let ft = md.file_type();
    if ft.is_dir() {
        tree.insert(dest, Node::new(Kind::empty_dir(), meta))?;
        let mut names: Vec<_> = std::fs::read_dir(src)?.collect::<Result<_, _>>()?;
        names.sort_by_key(|e| e.file_name());
        for e in names {
            add(tree, links, &e.path(), &dest.join(e.file_name()))?;
        }
        return Ok(());
    }
    if md.nlink() > 1 {
        if let Some(&id) = links.get(&(md.dev(), md.ino())) {
            tree.link(dest, id)?;
            return Ok(());
        }
    }
    let kind = if ft.is_file() {
        Kind::File(FileData::Path {
            path: src.to_path_buf(),
            len: md.len(),
        })
    } else if ft.is_symlink() {
        use std::os::unix::ffi::OsStrExt;
        Kind::Symlink(std::fs::read_link(src)?.as_os_str().as_bytes().to_vec())
    } else {
        return Ok(()); // devices etc. are not needed for timing
    };
    let id = tree.insert(dest, Node::new(kind, meta))?;
    links.insert((md.dev(), md.ino()), id);
    Ok(())
}

fn main() -> Res<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((out, srcs)) = args.split_first() else {
        return Err("usage: mkfs OUT.img SRC[:DEST]...".into());
    };
    let t0 = Instant::now();
    let mut tree = Tree::default();
    let mut links = HashMap::new();
    for s in srcs {
        let (src, dest) = s.split_once(':').unwrap_or((s, "/"));
        add(&mut tree, &mut links, Path::new(src), &PathBuf::from(dest))?;
    }
    let bytes: u64 = tree
        .walk()
        .iter()
        .filter_map(|(_, id)| match &tree.node(*id).kind {
            Kind::File(d) => Some(d.len()),
            _ => None,
        })
        .sum();
    println!(
        "scan: {} entries, {} MB in {:?}",
        tree.walk().len(),
        bytes >> 20,
        t0.elapsed()
    );
    let mut opts = cairn_ext4::Options::new(0);
    opts.timestamp = 1_700_000_000;
    opts.read_only = true;
    let t1 = Instant::now();
    let min = cairn_ext4::min_size_blocks(&tree, &opts)?;
    println!("min_size_blocks: {min} in {:?}", t1.elapsed());
    opts.size_blocks = min + min / 10;
    let _ = std::fs::remove_file(out);
    let f = std::fs::File::create(out)?;
    f.set_len(opts.size_blocks * 4096)?;
    let t2 = Instant::now();
    let s = cairn_ext4::write(&tree, &opts, &f, 0)?;
    println!(
        "write: {} of {} blocks used, {} inodes, {} data ranges in {:?}",
        s.blocks_used,
        s.blocks_total,
        s.inodes_used,
        s.data_ranges.len(),
        t2.elapsed()
    );
    Ok(())
}
