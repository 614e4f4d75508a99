//! The `message_type` of a typed message: its enum's and variant's names
//! (`CartMessage::AddItem`), or its struct's name, read through serde
//! without encoding anything.

use std::fmt;

use serde::ser::{self, Impossible, Serialize, Serializer};

/// `Enum::Variant` for an enum value, `Struct` for a struct, otherwise the
/// last segment of the Rust type's name.
pub(crate) fn message_type_of<T: Serialize + ?Sized>(value: &T) -> String {
    value.serialize(NameOf).unwrap_or_else(|_| {
        let full = std::any::type_name::<T>();
        let base = full.split('<').next().unwrap_or(full);
        base.rsplit("::").next().unwrap_or(base).to_owned()
    })
}

/// An event's type name: the variant's name for an enum value (the
/// enum's own name is left out, so renaming the Rust type does not rename
/// stored events), the struct's name for a struct.
pub(crate) fn event_type_of<T: Serialize + ?Sized>(value: &T) -> String {
    let full = message_type_of(value);
    match full.rsplit_once("::") {
        Some((_, variant)) => variant.to_owned(),
        None => full,
    }
}

/// Not a named value.
#[derive(Debug)]
struct Unnamed;

impl fmt::Display for Unnamed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("not a named type")
    }
}

impl std::error::Error for Unnamed {}

impl ser::Error for Unnamed {
    fn custom<T: fmt::Display>(_: T) -> Self {
        Unnamed
    }
}

/// Serializes a value into its type's name, ignoring its fields.
struct NameOf;

/// A compound value whose fields are skipped: its name is the result.
struct Named(String);

macro_rules! unnamed {
    ($($method:ident: $ty:ty),* $(,)?) => {
        $(fn $method(self, _: $ty) -> Result<String, Unnamed> {
            Err(Unnamed)
        })*
    };
}

impl Serializer for NameOf {
    type Ok = String;
    type Error = Unnamed;
    type SerializeSeq = Impossible<String, Unnamed>;
    type SerializeTuple = Impossible<String, Unnamed>;
    type SerializeTupleStruct = Named;
    type SerializeTupleVariant = Named;
    type SerializeMap = Impossible<String, Unnamed>;
    type SerializeStruct = Named;
    type SerializeStructVariant = Named;

    unnamed!(
        serialize_bool: bool, serialize_i8: i8, serialize_i16: i16, serialize_i32: i32,
        serialize_i64: i64, serialize_u8: u8, serialize_u16: u16, serialize_u32: u32,
        serialize_u64: u64, serialize_f32: f32, serialize_f64: f64, serialize_char: char,
        serialize_str: &str, serialize_bytes: &[u8],
    );

    fn serialize_none(self) -> Result<String, Unnamed> {
        Err(Unnamed)
    }

    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<String, Unnamed> {
        value.serialize(self)
    }

    fn serialize_unit(self) -> Result<String, Unnamed> {
        Err(Unnamed)
    }

    fn serialize_unit_struct(self, name: &'static str) -> Result<String, Unnamed> {
        Ok(name.to_owned())
    }

    fn serialize_unit_variant(
        self,
        name: &'static str,
        _: u32,
        variant: &'static str,
    ) -> Result<String, Unnamed> {
        Ok(format!("{name}::{variant}"))
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        name: &'static str,
        _: &T,
    ) -> Result<String, Unnamed> {
        Ok(name.to_owned())
    }

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        name: &'static str,
        _: u32,
        variant: &'static str,
        _: &T,
    ) -> Result<String, Unnamed> {
        Ok(format!("{name}::{variant}"))
    }

    fn serialize_seq(self, _: Option<usize>) -> Result<Self::SerializeSeq, Unnamed> {
        Err(Unnamed)
    }

    fn serialize_tuple(self, _: usize) -> Result<Self::SerializeTuple, Unnamed> {
        Err(Unnamed)
    }

    fn serialize_tuple_struct(
        self,
        name: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleStruct, Unnamed> {
        Ok(Named(name.to_owned()))
    }

    fn serialize_tuple_variant(
        self,
        name: &'static str,
        _: u32,
        variant: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleVariant, Unnamed> {
        Ok(Named(format!("{name}::{variant}")))
    }

    fn serialize_map(self, _: Option<usize>) -> Result<Self::SerializeMap, Unnamed> {
        Err(Unnamed)
    }

    fn serialize_struct(
        self,
        name: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStruct, Unnamed> {
        Ok(Named(name.to_owned()))
    }

    fn serialize_struct_variant(
        self,
        name: &'static str,
        _: u32,
        variant: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStructVariant, Unnamed> {
        Ok(Named(format!("{name}::{variant}")))
    }
}

impl ser::SerializeTupleStruct for Named {
    type Ok = String;
    type Error = Unnamed;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, _: &T) -> Result<(), Unnamed> {
        Ok(())
    }
    fn end(self) -> Result<String, Unnamed> {
        Ok(self.0)
    }
}

impl ser::SerializeTupleVariant for Named {
    type Ok = String;
    type Error = Unnamed;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, _: &T) -> Result<(), Unnamed> {
        Ok(())
    }
    fn end(self) -> Result<String, Unnamed> {
        Ok(self.0)
    }
}

impl ser::SerializeStruct for Named {
    type Ok = String;
    type Error = Unnamed;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        _: &'static str,
        _: &T,
    ) -> Result<(), Unnamed> {
        Ok(())
    }
    fn end(self) -> Result<String, Unnamed> {
        Ok(self.0)
    }
}

impl ser::SerializeStructVariant for Named {
    type Ok = String;
    type Error = Unnamed;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        _: &'static str,
        _: &T,
    ) -> Result<(), Unnamed> {
        Ok(())
    }
    fn end(self) -> Result<String, Unnamed> {
        Ok(self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::message_type_of;

    #[derive(serde::Serialize)]
    enum Cart {
        Clear,
        Add(u32),
        Pair(u32, u32),
        Item { sku: String },
    }

    #[derive(serde::Serialize)]
    struct Ping {
        n: u32,
    }

    #[test]
    fn names_variants_and_structs() {
        assert_eq!(message_type_of(&Cart::Clear), "Cart::Clear");
        assert_eq!(message_type_of(&Cart::Add(1)), "Cart::Add");
        assert_eq!(message_type_of(&Cart::Pair(1, 2)), "Cart::Pair");
        assert_eq!(
            message_type_of(&Cart::Item { sku: "a".into() }),
            "Cart::Item"
        );
        assert_eq!(message_type_of(&Ping { n: 1 }), "Ping");
        assert_eq!(message_type_of(&7_u32), "u32");
        assert_eq!(message_type_of(&vec![1_u8]), "Vec");
    }
}
