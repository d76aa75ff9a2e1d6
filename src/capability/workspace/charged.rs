//! The filesystem-side bound: bytes a step writes through WASI are charged to the step (see
//! [`crate::charges::StepCharges::written`]), so a tool with a workspace cannot fill the host
//! disk inside one step, before the step-end scan checks its quota.

use wasmtime::component::{Resource, ResourceTable};
use wasmtime_wasi::p2::{DynOutputStream, FsError, FsResult, OutputStream, Pollable, StreamError, StreamResult};

use crate::charges::HostLimitExceeded;
use crate::journal::{SharedJournal, lock};

/// Charges `bytes` written; past the bound, the error that ends the call.
pub(crate) fn charge_written(journal: &SharedJournal, bytes: usize) -> Result<(), HostLimitExceeded> {
    let mut journal = lock(journal);
    if journal.charges.written(bytes) {
        return Ok(());
    }
    Err(journal.charges.exceeded().expect("a refused charge records its bound"))
}

/// A file's output stream whose writes are charged to the step.
pub(crate) struct WriteCharged {
    inner: DynOutputStream,
    journal: SharedJournal,
}

impl WriteCharged {
    /// Replaces the stream behind `stream` in `table` by a charged one.
    pub fn wrap(
        table: &mut ResourceTable,
        stream: Resource<DynOutputStream>,
        journal: &SharedJournal,
    ) -> FsResult<Resource<DynOutputStream>> {
        let inner = table.delete(stream).map_err(FsError::trap)?;
        let charged: DynOutputStream = Box::new(Self { inner, journal: journal.clone() });
        table.push(charged).map_err(FsError::trap)
    }
}

#[async_trait::async_trait]
impl Pollable for WriteCharged {
    async fn ready(&mut self) {
        self.inner.ready().await
    }
}

#[async_trait::async_trait]
impl OutputStream for WriteCharged {
    fn write(&mut self, bytes: bytes::Bytes) -> StreamResult<()> {
        charge_written(&self.journal, bytes.len()).map_err(|e| StreamError::Trap(e.into()))?;
        self.inner.write(bytes)
    }

    async fn blocking_write_and_flush(&mut self, bytes: bytes::Bytes) -> StreamResult<()> {
        charge_written(&self.journal, bytes.len()).map_err(|e| StreamError::Trap(e.into()))?;
        self.inner.blocking_write_and_flush(bytes).await
    }

    fn flush(&mut self) -> StreamResult<()> {
        self.inner.flush()
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        self.inner.check_write()
    }

    fn write_zeroes(&mut self, nelem: usize) -> StreamResult<()> {
        charge_written(&self.journal, nelem).map_err(|e| StreamError::Trap(e.into()))?;
        self.inner.write_zeroes(nelem)
    }

    async fn cancel(&mut self) {
        self.inner.cancel().await
    }
}
