//! `wasi:filesystem`, audited. The sandbox itself is wasmtime-wasi's: a tool sees only the
//! preopens its grant names, read-only or read-write, and cap-std refuses every path that
//! leaves a preopen (`..`, absolute paths, symlinks pointing out). This layer sits in front
//! of wasmtime-wasi's implementation and records each refusal (`access` or `not-permitted`)
//! in the audit trail, with the path the tool asked for; every call is otherwise passed
//! through unchanged. It also marks the instance's filesystem dirty on every call that may
//! change a file or directory, so a step that changed nothing skips the workspace scan.
//! The grant ([`Preopen`], `[[tools.NAME.filesystem]]`), its checks, its rows and the
//! preopens an instance gets are in `grant`.

use std::sync::atomic::{AtomicBool, Ordering};

use wasmtime::component::{HasData, Linker, Resource};
use wasmtime_wasi::filesystem::WasiFilesystemCtxView;
use wasmtime_wasi::p2::bindings::filesystem::types::{
    self, DirectoryEntryStream, ErrorCode, HostDescriptor, HostDirectoryEntryStream,
};
use wasmtime_wasi::p2::{DynInputStream, DynOutputStream, FsError, FsResult};

mod grant;

pub(crate) use grant::{DENIED_AT_START, compare, configure, guest_path_problem, overlaps, validate};
pub use grant::{NAME, Preopen};

use super::CapabilityHost;
use super::audit::Auditor;
use super::workspace::{WriteCharged, charge_written};
use crate::journal::SharedJournal;

/// wasmtime-wasi's filesystem view plus the instance's auditor.
pub struct AuditedFilesystem<'a> {
    pub view: WasiFilesystemCtxView<'a>,
    pub audit: &'a Auditor,
    /// Set before any call that may change the filesystem (see [`Self::mutating`]).
    pub dirty: &'a AtomicBool,
    /// The step's journal, whose charges bound the bytes written (see [`WriteCharged`]).
    pub(crate) journal: &'a SharedJournal,
}

impl AuditedFilesystem<'_> {
    fn mutating(&self) {
        self.dirty.store(true, Ordering::Relaxed);
    }
}

/// Records `result` if it is a permission refusal, then hands it back.
async fn audited<T>(audit: &Auditor, op: &str, path: Option<&str>, result: FsResult<T>) -> FsResult<T> {
    if let Err(e) = &result
        && let Some(code @ (ErrorCode::Access | ErrorCode::NotPermitted)) = e.downcast_ref()
    {
        let request = match path {
            Some(path) => format!("{op} {}", path.escape_debug()),
            None => op.to_owned(),
        };
        let reason = match code {
            ErrorCode::Access => "access denied (outside the preopens or not granted)",
            _ => "not permitted (read-only grant, or a path that leaves the preopen)",
        };
        audit.deny("filesystem", &request, reason).await;
    }
    result
}

/// Describes what an open asks for, for the audit record.
fn open_request(path: &str, oflags: types::OpenFlags, flags: types::DescriptorFlags) -> String {
    let mut what = vec![];
    if flags.contains(types::DescriptorFlags::WRITE) {
        what.push("write");
    }
    if oflags.contains(types::OpenFlags::CREATE) {
        what.push("create");
    }
    if oflags.contains(types::OpenFlags::TRUNCATE) {
        what.push("truncate");
    }
    if what.is_empty() {
        what.push("read");
    }
    format!("{path} ({})", what.join(", "))
}

impl types::Host for AuditedFilesystem<'_> {
    fn convert_error_code(&mut self, err: FsError) -> wasmtime::Result<ErrorCode> {
        types::Host::convert_error_code(&mut self.view, err)
    }

    fn filesystem_error_code(&mut self, err: Resource<wasmtime::Error>) -> wasmtime::Result<Option<ErrorCode>> {
        types::Host::filesystem_error_code(&mut self.view, err)
    }
}

impl HostDescriptor for AuditedFilesystem<'_> {
    async fn advise(
        &mut self,
        fd: Resource<types::Descriptor>,
        offset: types::Filesize,
        len: types::Filesize,
        advice: types::Advice,
    ) -> FsResult<()> {
        self.view.advise(fd, offset, len, advice).await
    }

    async fn sync_data(&mut self, fd: Resource<types::Descriptor>) -> FsResult<()> {
        self.view.sync_data(fd).await
    }

    async fn get_flags(&mut self, fd: Resource<types::Descriptor>) -> FsResult<types::DescriptorFlags> {
        self.view.get_flags(fd).await
    }

    async fn get_type(&mut self, fd: Resource<types::Descriptor>) -> FsResult<types::DescriptorType> {
        self.view.get_type(fd).await
    }

    async fn set_size(&mut self, fd: Resource<types::Descriptor>, size: types::Filesize) -> FsResult<()> {
        self.mutating();
        let result = self.view.set_size(fd, size).await;
        audited(self.audit, &format!("set-size {size}"), None, result).await
    }

    async fn set_times(
        &mut self,
        fd: Resource<types::Descriptor>,
        atim: types::NewTimestamp,
        mtim: types::NewTimestamp,
    ) -> FsResult<()> {
        let result = self.view.set_times(fd, atim, mtim).await;
        audited(self.audit, "set-times", None, result).await
    }

    async fn read(
        &mut self,
        fd: Resource<types::Descriptor>,
        len: types::Filesize,
        offset: types::Filesize,
    ) -> FsResult<(Vec<u8>, bool)> {
        let result = self.view.read(fd, len, offset).await;
        audited(self.audit, "read", None, result).await
    }

    async fn write(
        &mut self,
        fd: Resource<types::Descriptor>,
        buf: Vec<u8>,
        offset: types::Filesize,
    ) -> FsResult<types::Filesize> {
        self.mutating();
        charge_written(self.journal, buf.len()).map_err(FsError::trap)?;
        let result = self.view.write(fd, buf, offset).await;
        audited(self.audit, "write", None, result).await
    }

    async fn read_directory(
        &mut self,
        fd: Resource<types::Descriptor>,
    ) -> FsResult<Resource<types::DirectoryEntryStream>> {
        let result = self.view.read_directory(fd).await;
        audited(self.audit, "read-directory", None, result).await
    }

    async fn sync(&mut self, fd: Resource<types::Descriptor>) -> FsResult<()> {
        self.view.sync(fd).await
    }

    async fn create_directory_at(&mut self, fd: Resource<types::Descriptor>, path: String) -> FsResult<()> {
        self.mutating();
        let result = self.view.create_directory_at(fd, path.clone()).await;
        audited(self.audit, "create-directory", Some(&path), result).await
    }

    async fn stat(&mut self, fd: Resource<types::Descriptor>) -> FsResult<types::DescriptorStat> {
        self.view.stat(fd).await
    }

    async fn stat_at(
        &mut self,
        fd: Resource<types::Descriptor>,
        path_flags: types::PathFlags,
        path: String,
    ) -> FsResult<types::DescriptorStat> {
        let result = self.view.stat_at(fd, path_flags, path.clone()).await;
        audited(self.audit, "stat", Some(&path), result).await
    }

    async fn set_times_at(
        &mut self,
        fd: Resource<types::Descriptor>,
        path_flags: types::PathFlags,
        path: String,
        atim: types::NewTimestamp,
        mtim: types::NewTimestamp,
    ) -> FsResult<()> {
        let result = self.view.set_times_at(fd, path_flags, path.clone(), atim, mtim).await;
        audited(self.audit, "set-times", Some(&path), result).await
    }

    async fn link_at(
        &mut self,
        fd: Resource<types::Descriptor>,
        old_path_flags: types::PathFlags,
        old_path: String,
        new_descriptor: Resource<types::Descriptor>,
        new_path: String,
    ) -> FsResult<()> {
        self.mutating();
        let shown = format!("{old_path} -> {new_path}");
        let result = self.view.link_at(fd, old_path_flags, old_path, new_descriptor, new_path).await;
        audited(self.audit, "link", Some(&shown), result).await
    }

    async fn open_at(
        &mut self,
        fd: Resource<types::Descriptor>,
        path_flags: types::PathFlags,
        path: String,
        oflags: types::OpenFlags,
        flags: types::DescriptorFlags,
    ) -> FsResult<Resource<types::Descriptor>> {
        if flags.contains(types::DescriptorFlags::WRITE)
            || oflags.intersects(types::OpenFlags::CREATE | types::OpenFlags::TRUNCATE)
        {
            self.mutating();
        }
        let shown = open_request(&path, oflags, flags);
        let result = self.view.open_at(fd, path_flags, path, oflags, flags).await;
        audited(self.audit, "open", Some(&shown), result).await
    }

    fn drop(&mut self, fd: Resource<types::Descriptor>) -> wasmtime::Result<()> {
        HostDescriptor::drop(&mut self.view, fd)
    }

    async fn readlink_at(&mut self, fd: Resource<types::Descriptor>, path: String) -> FsResult<String> {
        let result = self.view.readlink_at(fd, path.clone()).await;
        audited(self.audit, "readlink", Some(&path), result).await
    }

    async fn remove_directory_at(&mut self, fd: Resource<types::Descriptor>, path: String) -> FsResult<()> {
        self.mutating();
        let result = self.view.remove_directory_at(fd, path.clone()).await;
        audited(self.audit, "remove-directory", Some(&path), result).await
    }

    async fn rename_at(
        &mut self,
        fd: Resource<types::Descriptor>,
        old_path: String,
        new_fd: Resource<types::Descriptor>,
        new_path: String,
    ) -> FsResult<()> {
        self.mutating();
        let shown = format!("{old_path} -> {new_path}");
        let result = self.view.rename_at(fd, old_path, new_fd, new_path).await;
        audited(self.audit, "rename", Some(&shown), result).await
    }

    async fn symlink_at(
        &mut self,
        fd: Resource<types::Descriptor>,
        src_path: String,
        dest_path: String,
    ) -> FsResult<()> {
        self.mutating();
        let shown = format!("{dest_path} -> {src_path}");
        let result = self.view.symlink_at(fd, src_path, dest_path).await;
        audited(self.audit, "symlink", Some(&shown), result).await
    }

    async fn unlink_file_at(&mut self, fd: Resource<types::Descriptor>, path: String) -> FsResult<()> {
        self.mutating();
        let result = self.view.unlink_file_at(fd, path.clone()).await;
        audited(self.audit, "unlink", Some(&path), result).await
    }

    fn read_via_stream(
        &mut self,
        fd: Resource<types::Descriptor>,
        offset: types::Filesize,
    ) -> FsResult<Resource<DynInputStream>> {
        self.view.read_via_stream(fd, offset)
    }

    fn write_via_stream(
        &mut self,
        fd: Resource<types::Descriptor>,
        offset: types::Filesize,
    ) -> FsResult<Resource<DynOutputStream>> {
        self.mutating();
        let stream = self.view.write_via_stream(fd, offset)?;
        WriteCharged::wrap(self.view.table, stream, self.journal)
    }

    fn append_via_stream(&mut self, fd: Resource<types::Descriptor>) -> FsResult<Resource<DynOutputStream>> {
        self.mutating();
        let stream = self.view.append_via_stream(fd)?;
        WriteCharged::wrap(self.view.table, stream, self.journal)
    }

    async fn is_same_object(
        &mut self,
        a: Resource<types::Descriptor>,
        b: Resource<types::Descriptor>,
    ) -> wasmtime::Result<bool> {
        self.view.is_same_object(a, b).await
    }

    async fn metadata_hash(&mut self, fd: Resource<types::Descriptor>) -> FsResult<types::MetadataHashValue> {
        self.view.metadata_hash(fd).await
    }

    async fn metadata_hash_at(
        &mut self,
        fd: Resource<types::Descriptor>,
        path_flags: types::PathFlags,
        path: String,
    ) -> FsResult<types::MetadataHashValue> {
        let result = self.view.metadata_hash_at(fd, path_flags, path.clone()).await;
        audited(self.audit, "stat", Some(&path), result).await
    }
}

impl HostDirectoryEntryStream for AuditedFilesystem<'_> {
    async fn read_directory_entry(
        &mut self,
        stream: Resource<DirectoryEntryStream>,
    ) -> FsResult<Option<types::DirectoryEntry>> {
        self.view.read_directory_entry(stream).await
    }

    fn drop(&mut self, stream: Resource<DirectoryEntryStream>) -> wasmtime::Result<()> {
        HostDirectoryEntryStream::drop(&mut self.view, stream)
    }
}

struct HasAuditedFilesystem;

impl HasData for HasAuditedFilesystem {
    type Data<'a> = AuditedFilesystem<'a>;
}

/// Replaces wasmtime-wasi's `wasi:filesystem/types` in `linker` (added before, with the rest
/// of WASI) by the audited one.
pub(crate) fn add_to_linker<T: CapabilityHost>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    super::shadow(linker, |linker| types::add_to_linker::<T, HasAuditedFilesystem>(linker, T::filesystem))
}
