//! What an account may do: parsed from the config, checked by the storage
//! back-end's wrapper before every operation.

/// What a user may do. Checked by the storage back-end before every
/// operation, so the FTP front never needs to know about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Permission {
    /// LIST, NLST, MLSD, MLST, STAT, CWD (checked: without it CWD answers
    /// 250 without looking, so it reveals nothing).
    List,
    /// RETR, SIZE, MDTM.
    Read,
    /// STOR, APPE, STOU of new files.
    Write,
    /// DELE, RMD.
    Delete,
    /// MKD.
    Mkdir,
    /// RNFR/RNTO.
    Rename,
    /// STOR over an existing file, APPE and REST+STOR. The config's `write`
    /// grants it with [`Permission::Write`]; `create` grants only the
    /// latter, for drop boxes that must never replace a file.
    Overwrite,
}

impl Permission {
    /// Every permission, for "full access" users.
    pub const ALL: [Permission; 7] = [
        Permission::List,
        Permission::Read,
        Permission::Write,
        Permission::Delete,
        Permission::Mkdir,
        Permission::Rename,
        Permission::Overwrite,
    ];

    /// Parses the config spelling (`list`, `read`, …, or `all`).
    pub fn parse_list(names: &[String]) -> Result<PermissionSet, String> {
        let mut set = PermissionSet::default();
        for name in names {
            match name.as_str() {
                "all" => Permission::ALL.iter().for_each(|p| set.insert(*p)),
                "list" => set.insert(Permission::List),
                "read" => set.insert(Permission::Read),
                "write" => {
                    set.insert(Permission::Write);
                    set.insert(Permission::Overwrite);
                }
                "create" => set.insert(Permission::Write),
                "delete" => set.insert(Permission::Delete),
                "mkdir" => set.insert(Permission::Mkdir),
                "rename" => set.insert(Permission::Rename),
                other => return Err(other.to_string()),
            }
        }
        Ok(set)
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

/// A small set of [`Permission`]s.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PermissionSet(u8);

impl PermissionSet {
    /// Adds one permission.
    pub fn insert(&mut self, p: Permission) {
        self.0 |= p.bit();
    }

    /// Whether `p` is granted.
    pub fn allows(&self, p: Permission) -> bool {
        self.0 & p.bit() != 0
    }

    /// Read-only access: list and read.
    pub fn read_only() -> Self {
        let mut set = Self::default();
        set.insert(Permission::List);
        set.insert(Permission::Read);
        set
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permissions_parse() {
        let set = Permission::parse_list(&["list".into(), "read".into()]).unwrap();
        assert!(set.allows(Permission::Read) && !set.allows(Permission::Write));
        let all = Permission::parse_list(&["all".into()]).unwrap();
        assert!(Permission::ALL.iter().all(|p| all.allows(*p)));
        assert_eq!(
            Permission::parse_list(&["fly".into()]),
            Err("fly".to_string())
        );
        let write = Permission::parse_list(&["write".into()]).unwrap();
        assert!(write.allows(Permission::Write) && write.allows(Permission::Overwrite));
        let create = Permission::parse_list(&["create".into()]).unwrap();
        assert!(create.allows(Permission::Write) && !create.allows(Permission::Overwrite));
    }
}
