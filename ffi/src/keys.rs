//! Listing a store's keys: `dynamo_key_page`, one page of keys with the cursor of the
//! next, from `dynamo_client_list_keys` or its future form. Tools that walk a whole
//! store (export, consistency checks) page through it with these.

use std::ffi::{c_char, CString};

use dynamo_core::client::KeyPage;

use crate::args;
use crate::client::client_of;
use crate::error::{boundary, dynamo_status, FfiError};
use crate::future::{self, dynamo_future, Outcome};
use crate::handle::Registry;

/// One page of a store's keys (opaque), with the cursor of the next page. Read it from
/// any thread; free it once with `dynamo_key_page_free`.
pub struct dynamo_key_page {
    _opaque: [u8; 0],
}

pub(crate) struct KeyPageData {
    keys: Vec<Vec<u8>>,
    next: Option<CString>,
    unanswered: CString,
    unanswered_count: usize,
}

static KEY_PAGES: Registry<KeyPageData> = Registry::new("dynamo_key_page");

pub(crate) fn new_key_page(page: KeyPage) -> *mut dynamo_key_page {
    let names: String = page.unanswered.iter().map(|n| format!("{n}\n")).collect();
    KEY_PAGES.insert(KeyPageData {
        keys: page.keys,
        // A cursor is `partition:hex`, never with a NUL in it.
        next: page.next.and_then(|c| CString::new(c).ok()),
        // Member names are validated ASCII, never with a NUL in them.
        unanswered: CString::new(names).unwrap_or_default(),
        unanswered_count: page.unanswered.len(),
    })
}

struct ListArgs {
    store: String,
    cursor: Option<String>,
}

/// # Safety
/// A NUL-terminated store name, and NULL or a NUL-terminated cursor.
unsafe fn list_args(store: *const c_char, cursor: *const c_char) -> Result<ListArgs, FfiError> {
    // SAFETY: forwarded from the export's contract.
    let store = unsafe { args::text(store, "store") }?.to_owned();
    // SAFETY: forwarded from the export's contract.
    let cursor = unsafe { args::opt_text(cursor, "cursor") }?.map(str::to_owned);
    Ok(ListArgs { store, cursor })
}

/// Lists one page of the keys of `store`: up to `limit` keys (at most 10,000; 0 means
/// 1,000), from the start when `cursor` is NULL, else from the `next` cursor of the
/// previous page. Each partition's keys are the union of what its N owners hold
/// (owners that fail are skipped and named by `dynamo_key_page_unanswered`; if none
/// answers the call fails), in (partition, key)
/// order, so the order is not the keys' byte order. Keys written while a listing runs
/// may or may not appear. Blocks. On `DYNAMO_OK` writes a new page to `*page` (free it
/// with `dynamo_key_page_free`); a page may be empty only when it is the last.
/// Arguments are copied; the caller owns `*page`. Thread-safe.
#[no_mangle]
pub extern "C" fn dynamo_client_list_keys(
    client: *mut crate::dynamo_client,
    store: *const c_char,
    cursor: *const c_char,
    limit: u32,
    page: *mut *mut dynamo_key_page,
) -> dynamo_status {
    boundary("dynamo_client_list_keys", || {
        args::out(page, "page")?;
        let c = client_of(client)?;
        // SAFETY: the documented argument contract.
        let a = unsafe { list_args(store, cursor) }?;
        let p = c
            .blocking()
            .list_keys(&a.store, a.cursor.as_deref(), page_limit(limit))?;
        // SAFETY: checked non-null above.
        unsafe { args::write(page, new_key_page(p)) };
        Ok(())
    })
}

/// The future form of `dynamo_client_list_keys` (outcome from
/// `dynamo_future_key_page_result`). Arguments are copied; the caller owns `*future`.
/// Thread-safe.
#[no_mangle]
pub extern "C" fn dynamo_client_list_keys_async(
    client: *mut crate::dynamo_client,
    store: *const c_char,
    cursor: *const c_char,
    limit: u32,
    future: *mut *mut dynamo_future,
) -> dynamo_status {
    boundary("dynamo_client_list_keys_async", || {
        args::out(future, "future")?;
        let c = client_of(client)?;
        // SAFETY: the documented argument contract.
        let a = unsafe { list_args(store, cursor) }?;
        let f = future::spawn(async move {
            Outcome::Keys(
                c.list_keys(&a.store, a.cursor.as_deref(), page_limit(limit))
                    .await,
            )
        })?;
        // SAFETY: checked non-null above.
        unsafe { args::write(future, f) };
        Ok(())
    })
}

fn page_limit(limit: u32) -> u32 {
    if limit == 0 {
        1000
    } else {
        limit
    }
}

/// Writes the number of keys on `page` to `*count`.
/// Borrows `page`. Thread-safe.
#[no_mangle]
pub extern "C" fn dynamo_key_page_count(
    page: *const dynamo_key_page,
    count: *mut usize,
) -> dynamo_status {
    boundary("dynamo_key_page_count", || {
        args::out(count, "count")?;
        let p = KEY_PAGES.get(page)?;
        // SAFETY: checked non-null above.
        unsafe { args::write(count, p.keys.len()) };
        Ok(())
    })
}

/// Key `index` (from 0) of `page`: writes its bytes and length to `*key` / `*key_len`.
/// The bytes belong to the page and stay valid until it is freed. An index out of range
/// returns `DYNAMO_ERR_BAD_REQUEST`.
/// Borrows `page`. Thread-safe.
#[no_mangle]
pub extern "C" fn dynamo_key_page_key(
    page: *const dynamo_key_page,
    index: usize,
    key: *mut *const u8,
    key_len: *mut usize,
) -> dynamo_status {
    boundary("dynamo_key_page_key", || {
        args::out(key, "key")?;
        args::out(key_len, "key_len")?;
        let p = KEY_PAGES.get(page)?;
        let k = p.keys.get(index).ok_or_else(|| {
            FfiError::bad_request(format!(
                "key index {index} is out of range: the page has {}",
                p.keys.len()
            ))
        })?;
        // SAFETY: both checked non-null above; the bytes live in the registry's object
        // until the page is freed.
        unsafe {
            args::write(key, args::c_ptr(k));
            args::write(key_len, k.len());
        }
        Ok(())
    })
}

/// Writes the cursor of the next page (a NUL-terminated string for the next
/// `dynamo_client_list_keys`) to `*cursor`, or NULL when this page is the last. It
/// belongs to the page and stays valid until the page is freed.
/// Borrows `page`. Thread-safe.
#[no_mangle]
pub extern "C" fn dynamo_key_page_next(
    page: *const dynamo_key_page,
    cursor: *mut *const c_char,
) -> dynamo_status {
    boundary("dynamo_key_page_next", || {
        args::out(cursor, "cursor")?;
        let p = KEY_PAGES.get(page)?;
        let c = p.next.as_ref().map_or(std::ptr::null(), |c| c.as_ptr());
        // SAFETY: checked non-null above; the string lives until the page is freed.
        unsafe { args::write(cursor, c) };
        Ok(())
    })
}

/// The owners that failed to answer for the partitions `page` covers (keys only they
/// hold are missing from it): writes their number to `*count` and their member names,
/// each followed by a newline, to `*names` (a NUL-terminated string that belongs to the
/// page; empty when every owner answered).
/// Borrows `page`. Thread-safe.
#[no_mangle]
pub extern "C" fn dynamo_key_page_unanswered(
    page: *const dynamo_key_page,
    names: *mut *const c_char,
    count: *mut usize,
) -> dynamo_status {
    boundary("dynamo_key_page_unanswered", || {
        args::out(names, "names")?;
        args::out(count, "count")?;
        let p = KEY_PAGES.get(page)?;
        // SAFETY: both checked non-null above; the string lives until the page is freed.
        unsafe {
            args::write(names, p.unanswered.as_ptr());
            args::write(count, p.unanswered_count);
        }
        Ok(())
    })
}

/// Frees `page` (and every pointer read from it). A second free returns
/// `DYNAMO_ERR_BAD_REQUEST`.
/// Ends the caller's ownership. Thread-safe, but no other thread may still read
/// pointers from the page.
#[no_mangle]
pub extern "C" fn dynamo_key_page_free(page: *mut dynamo_key_page) -> dynamo_status {
    boundary("dynamo_key_page_free", || KEY_PAGES.remove(page).map(drop))
}
